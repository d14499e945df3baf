"""
Secrets in the configuration (issue 17): found by where they sit whatever
their YAML type, masked in every log output, never echoed in a config
error, too-short ones reported as weak instead of masked, and a warning for
a configuration file others can read while it holds secrets.
"""

import io
import json
import os

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import (
    LogLevel,
    formatEvent,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.trial.unittest import SynchronousTestCase

from grott import logs
from grott.config import ConfigError, config_from_dict, config_from_string, load_config
from grott.scripts import check
from grott.secrets import MASK, Secrets, find_secrets, is_secret_key, secrets_in

NUMERIC = 90210417
SETTINGS = f"""
plugins:
  settings:
    pvupload: {{apikey: 1234567890, system_id: 42}}
    legacy: {{pwd: {NUMERIC}, passwd: "pass-Wd-77", key: "key-Val-88"}}
    db: {{dsn: "postgresql://grott:s3cr3t-pw@db.local/grott", city: Utrecht}}
    web: {{url: "https://admin:p%40ss-word@example.invalid/api"}}
    pg: {{conninfo: "host=db user=grott password=kw-Secret-9 dbname=x"}}
"""
EXPECTED = {"1234567890", str(NUMERIC), "pass-Wd-77", "key-Val-88", "s3cr3t-pw",
            "p%40ss-word", "p@ss-word", "kw-Secret-9"}


class FindTests(SynchronousTestCase):
    def test_secretKeyNames(self):
        for name in ["password", "passwd", "pwd", "mqtt_password", "apiKey", "api_key",
                     "private_key", "key", "token", "Secret", "accessKey", "db_pass",
                     "client-secret", "APIKEY", "credentials"]:
            self.assertTrue(is_secret_key(name), name)
        for name in ["keepalive", "keyfile", "city", "username", "host", "passive",
                     "bypass", "monkey", "system_id", 5]:
            self.assertFalse(is_secret_key(name), name)

    def test_foundWhateverTheirType(self):
        config = config_from_string(SETTINGS)
        self.assertEqual(secrets_in(config), EXPECTED)
        keys = {key for key, _ in find_secrets(config)}
        self.assertIn("plugins.settings.legacy.pwd", keys)
        self.assertIn("plugins.settings.db.dsn (URL password)", keys)

    def test_commandTokenIsASecret(self):
        token = "admin-Token-0123456789"
        config = config_from_string(f'command:\n  token: "{token}"\n')
        self.assertEqual(secrets_in(config), {token})

    def test_shortOnesAreNotMasked(self):
        secrets = Secrets(["x", "abcde", "abcdef"])
        self.assertEqual(secrets.values, ("abcdef",))
        self.assertEqual(secrets.mask("x abcde abcdefg"), f"x abcde {MASK}g")


class ConfigErrorTests(SynchronousTestCase):
    def test_numericPasswordTakenAsTypedAndMasked(self):
        # Issue 20: what YAML users type is accepted; the text as typed
        # (leading zero kept), and it is a secret like any other.
        config = config_from_string(f"outputs:\n  mqtt: {{password: 0{NUMERIC}}}\n", "c.yaml")
        self.assertEqual(config.outputs.mqtt.password, f"0{NUMERIC}")
        self.assertIn(f"0{NUMERIC}", secrets_in(config))

    def test_numericPasswordNeverEchoed(self):
        # Without the file's text (a dict), the number cannot be trusted.
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"outputs": {"mqtt": {"password": NUMERIC}}}, "c.yaml")
        self.assertEqual(str(e.exception), "c.yaml: outputs.mqtt.password: expected a string, "
                                           "got int (quote it in the YAML file)")
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"command": {"token": NUMERIC * 2}}, "c.yaml")
        self.assertNotIn(str(NUMERIC), str(e.exception))

    def test_otherValuesStillShown(self):
        with self.assertRaises(ConfigError) as e:
            config_from_string("outputs:\n  mqtt: {port: x1883}\n", "c.yaml")
        self.assertIn("'x1883'", str(e.exception))


class LogTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)

    def start(self, text):
        path = os.path.join(self.tmp, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + f"log:\n  to: file\n  format: json\n  file: {self.tmp}/grott.log\n")
        os.chmod(path, 0o600)
        self.seen = io.StringIO()
        twistd = textFileLogObserver(self.seen)
        globalLogPublisher.addObserver(twistd)
        self.addCleanup(globalLogPublisher.removeObserver, twistd)
        clock = Clock()
        svc = logs.LoggingService.fromConfig(load_config(path), clock)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())
        return svc

    def outputs(self, svc):
        svc.stopService()
        with open(os.path.join(self.tmp, "grott.log"), encoding="utf-8") as f:
            return {"main": f.read(), "twistd": self.seen.getvalue()}

    def test_everyKindMasked(self):
        svc = self.start(SETTINGS)
        log = logs.Logger("grott.test")
        log.info("pvupload answered {code} for {value}", code=401, value=1234567890)
        log.info("legacy login {pwd}", pwd=NUMERIC)
        log.info("settings {s}", s=svc.config)
        log.info("connecting to {dsn}", dsn="postgresql://grott:s3cr3t-pw@db.local/grott")
        log.info("GET https://admin:p@ss-word@example.invalid/api and {k}", k="key-Val-88")
        log.info("plain {marker}", marker="visible-marker pass-Wd-77")
        log.info("psql {c}", c="host=db user=grott password=kw-Secret-9 dbname=x")
        for name, text in self.outputs(svc).items():
            for secret in EXPECTED:
                self.assertNotIn(secret, text, name)
            self.assertIn("visible-marker", text, name)
            self.assertIn("postgresql://grott:" + MASK + "@db.local/grott", text, name)
        # The numeric field itself, not only the text, is masked in JSON.
        main = self.outputs_json()
        [event] = [e for e in main if "legacy login" in e.get("log_format", "")
                   or e.get("pwd") is not None]
        self.assertNotIn(str(NUMERIC), json.dumps(event))

    def outputs_json(self):
        with open(os.path.join(self.tmp, "grott.log"), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def test_shortPasswordWarnsAndMasksNothing(self):
        svc = self.start('outputs:\n  mqtt: {password: "s"}\n')
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        logs.Logger("grott.test").info("sessions stay readable")
        text = self.outputs(svc)["main"]
        self.assertIn("sessions stay readable", text)
        self.assertEqual(events[0]["log_format"], "sessions stay readable")
        self.assertIn("outputs.mqtt.password: shorter than 6 characters: a weak secret",
                      text)

    def test_servicesDoNotShareSecrets(self):
        """
        Each LoggingService masks its own configuration's secrets: nothing
        is left behind in a module for the next one.
        """
        first = self.start(SETTINGS)
        first.stopService()
        second = self.start("")
        self.assertEqual(second.secrets.values, ())
        self.assertEqual(logs.redact({"log_format": "s3cr3t-pw"}, second.secrets),
                         {"log_format": "s3cr3t-pw"})


class ReadableConfigTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)

    def write(self, text, mode):
        path = os.path.join(self.tmp, "config.yaml")
        plugins = f"plugins:\n  directory: {self.tmp}/plugins\n"
        if "\nplugins:\n" in text:  # one plugins: section (a second is an error)
            text, plugins = text.replace("\nplugins:\n", "\n" + plugins, 1), ""
        with open(path, "w", encoding="utf-8") as f:
            f.write("command:\n  listen: none\nproxy:\n  upstream: none\n" + plugins + text)
        os.chmod(path, mode)
        return path

    def run_check(self, path):
        options = check.Options()
        options.parseOptions(["--config", path])
        out, err = io.StringIO(), io.StringIO()
        status = check.main(options, out, err)
        return status, out.getvalue(), err.getvalue()

    def test_worldReadableWithSecrets(self):
        path = self.write('outputs:\n  mqtt: {password: "long-enough-pw"}\n', 0o644)
        status, out, err = self.run_check(path)
        self.assertEqual((status, out), (0, f"{path}: OK\n"))
        self.assertEqual(err, f"{path}: warning: readable by its group and other users "
                              f"(mode 0644) and holds secrets (outputs.mqtt.password): "
                              f"chmod 600 {path}\n")
        self.assertNotIn("long-enough-pw", err)
        # And at start-up, in the log.
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        svc = logs.LoggingService.fromConfig(load_config(path))
        svc.startService()
        svc.stopService()
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(warnings, ["configuration: " + err.split(": warning: ")[1].strip()])

    def test_groupReadable(self):
        path = self.write(SETTINGS, 0o640)
        self.assertIn("readable by its group (mode 0640)", self.run_check(path)[2])

    def test_privateOrWithoutSecrets(self):
        # (SETTINGS configures plugins that are not there: warned about.)
        err = self.run_check(self.write(SETTINGS, 0o600))[2]
        self.assertNotIn("readable", err)
        self.assertIn("warning: plugins: plugins.settings has settings for pvupload", err)
        self.assertEqual(self.run_check(self.write("", 0o644))[2], "")

    def test_shortSecretInCheck(self):
        status, _, err = self.run_check(self.write("outputs:\n  mqtt: {password: abc}\n", 0o600))
        self.assertEqual(status, 0)
        self.assertIn("outputs.mqtt.password: shorter than 6 characters", err)
        self.assertNotIn("abc", err)

    def test_networkAdminSocketWithoutTokenFails(self):
        path = self.write("", 0o600)
        with open(path, encoding="utf-8") as f:
            text = f.read().replace("listen: none", "listen: 'tcp:15279'")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        status, out, err = self.run_check(path)
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"{path}: command.token: required when command.listen (tcp:15279) "
                      "is not a loopback address or a unix: socket", err)
