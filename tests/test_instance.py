"""
instance.id: configured, or host name plus the datalogger port, in the
start-up line and the stats report.
"""

from twisted.trial.unittest import SynchronousTestCase

from grott.config import ConfigError, config_from_string
from grott.instance import instance_id, listen_port
from grott.session import Registry
from grott.stats import report_lines


class ListenPortTests(SynchronousTestCase):
    def test_forms(self):
        cases = {
            "tcp:5279": "5279",
            "tcp:5279:interface=127.0.0.1": "5279",
            "tcp:port=5280:interface=::1": "5280",
            "tcp6:interface=\\:\\:1:port=5281": "5281",
            "haproxy:tcp:5282": "5282",
            "haproxy:tcp:port=5283:interface=127.0.0.1": "5283",
            "unix:/run/grott/dataloggers.sock": "dataloggers.sock",
            "systemd:domain=INET:index=0": None,
        }
        for description, port in cases.items():
            self.assertEqual(listen_port(description), port, description)


class InstanceIdTests(SynchronousTestCase):
    def test_default_is_host_and_port(self):
        config = config_from_string("proxy:\n  listen: haproxy:tcp:5279\n")
        self.assertEqual(instance_id(config, hostname=lambda: "pi4"), "pi4:5279")

    def test_configured(self):
        config = config_from_string("instance:\n  id: grott-a\n")
        self.assertEqual(instance_id(config, hostname=lambda: "pi4"), "grott-a")

    def test_bad_id_is_a_config_error(self):
        for bad in ("a/b", "a+", "#", "x" * 65):
            with self.assertRaises(ConfigError) as e:
                config_from_string(f"instance:\n  id: '{bad}'\n")
            self.assertIn("instance.id", str(e.exception))

    def test_in_report(self):
        lines = report_lines(Registry(), 0.0, instance="grott-a")
        self.assertTrue(lines[0].startswith("0 datalogger(s) connected"), lines)
        self.assertTrue(lines[0].endswith("; instance grott-a"), lines)


class InstanceInMetricsTests(SynchronousTestCase):
    def test_info_metric_and_stats(self):
        from prometheus_client import CollectorRegistry, generate_latest
        from twisted.internet.task import Clock

        from grott.metrics import GrottCollector
        from grott.stats import report_data

        registry = CollectorRegistry()
        registry.register(GrottCollector(Registry(), Clock(), instance="grott-a"))
        text = generate_latest(registry).decode()
        self.assertIn('grott_instance_info{instance_id="grott-a"} 1.0', text)
        self.assertEqual(report_data(Registry(), 0.0, "grott-a")["instance"], "grott-a")
