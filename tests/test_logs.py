"""
grott.logs and grott.logfiles: levels, the log file in text and JSON,
per-datalogger files and their rotation, secret masking, the twistd
--logger hand-off, and no print or stdlib logging anywhere in grott.
"""

import ast
import io
import json
import os
import time

from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.logger import Logger as TwistedLogger
from twisted.trial.unittest import SynchronousTestCase

import grott
from grott import logs
from grott.config import LogConfig, config_from_string
from grott.logfiles import DataloggerLogs, safe_name
from grott.secrets import Secrets

PACKET = {"direction": "datalogger->server", "record_type": 0x0104, "record_name": "data",
          "hex": "0001000600200104abcd", "record": {"pvpower": 1234.5}}


#: Where the proxy's packet trace emits (a LoggingService's tracing.log).
PACKETS = logs.PacketTracing().log


def emit_packet(serial, **fields):
    event = dict(PACKET, **fields)
    PACKETS.debug("{serial} {direction} {record_name} {hex}", serial=serial, **event)


def close_session(serial):
    PACKETS.info("session of {serial} closed", serial=serial, session_closed=True)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class LoggingCase(SynchronousTestCase):
    """
    Helpers: a temporary directory, a capture of the global log (what
    twistd's observer sees), and services stopped and global state restored
    after each test.
    """

    def setUp(self):
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.seen = []
        globalLogPublisher.addObserver(self.seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.seen.append)
        self.clock = Clock()
        self.clock.advance(time.time())

    def start(self, secrets=(), handoff=None, **settings):
        settings.setdefault("file", os.path.join(self.tmp, "grott.log"))
        settings.setdefault("directory", os.path.join(self.tmp, "logs"))
        svc = logs.LoggingService(LogConfig(**settings), secrets, self.clock, handoff=handoff)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())
        return svc

    def grott_events(self, namespace="grott.test"):
        return [e for e in self.seen if e.get("log_namespace") == namespace]


class LevelTests(LoggingCase):
    def test_levelFiltersGrottEvents(self):
        svc = self.start(level="warn")
        log = logs.Logger("grott.test")
        log.debug("d")
        log.info("i")
        log.warn("w")  # noqa: G010 (twisted.logger has no warning())
        log.error("e")
        log.critical("c")
        self.assertEqual([e["log_format"] for e in self.grott_events()], ["w", "e", "c"])
        svc.stopService()
        log.info("after")
        self.assertEqual(self.grott_events()[-1]["log_format"], "after")

    def test_debugLetsEverythingThrough(self):
        self.start(level="debug")
        log = logs.Logger("grott.test")
        log.debug("d {n}", n=1)
        self.assertEqual([(e["log_format"], e["n"]) for e in self.grott_events()], [("d {n}", 1)])

    def test_infoIsTheDefaultAndHidesPackets(self):
        self.start(per_datalogger=True)
        logs.Logger("grott.test").info("i")
        emit_packet("AB1")
        self.assertEqual(len(self.grott_events()), 1)
        self.assertEqual(self.grott_events("grott.packets"), [])

    def test_twoServicesNeverLogTwice(self):
        """
        The later of two running services routes grott's events until it
        stops; then the earlier one again, then the default route.
        """
        first = self.start(level="info")
        second = self.start(level="warn")
        log = logs.Logger("grott.test")
        log.info("hidden by the second")
        log.warn("once")  # noqa: G010
        second.stopService()
        log.info("through the first")
        first.stopService()
        log.debug("default route: not at debug")
        log.info("default route")
        self.assertEqual([e["log_format"] for e in self.grott_events()],
                         ["once", "through the first", "default route"])

    def test_tracePackets(self):
        for settings, expected in [({}, False), ({"level": "debug"}, True),
                                   ({"per_datalogger": True}, True),
                                   ({"level": "error", "per_datalogger": True}, True)]:
            svc = self.start(**settings)
            self.assertIs(svc.tracing.enabled, expected, settings)
            svc.stopService()
            self.assertIs(svc.tracing.enabled, False)

    def test_proxyTracesThroughTheServiceTracing(self):
        """
        The service tree hands the proxy a packet trace into the logging
        service's own tracing log when that service enables tracing, and
        none when it does not.
        """
        from twisted.internet.testing import MemoryReactor

        from grott.proxy import PacketTrace
        from grott.service import makeService
        for level, traced in [("debug", True), ("info", False)]:
            config = config_from_string(
                f"log: {{level: {level}}}\ncommand: {{listen: none}}\n"
                f"metrics: {{listen: none}}\n"
                f"plugins: {{directory: {self.tmp}/plugins}}\nproxy: {{upstream: none}}\n")
            top = makeService(config, MemoryReactor())
            logging = top.getServiceNamed("logging")
            proxy = top.getServiceNamed("proxy")
            logging.startService()
            self.addCleanup(logging.stopService)
            proxy.startService()
            trace = proxy.factory.trace
            if traced:
                self.assertIsInstance(trace, PacketTrace)
                self.assertIs(trace.log, logging.tracing.log)
            else:
                self.assertIsNone(trace)

    def test_startLineSaysWhatIsLogged(self):
        self.start(to="file", per_datalogger=True)
        [event] = self.grott_events("grott.logs")
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["threshold"], "info")
        self.assertIn(os.path.join(self.tmp, "grott.log"), event["to"])
        self.assertIn(os.path.join(self.tmp, "logs"), event["per"])


class MainFileTests(LoggingCase):
    def test_text(self):
        svc = self.start(to="file", format="text")
        logs.Logger("grott.test").info("datalogger {serial} connected from {peer}",
                                        serial="AB1", peer="10.0.0.5:4000")
        logs.Logger("grott.test").debug("not at info")
        TwistedLogger(namespace="twisted.test", observer=globalLogPublisher).info("from Twisted")
        svc.stopService()
        text = read(os.path.join(self.tmp, "grott.log"))
        self.assertIn("[grott.test#info] datalogger AB1 connected from 10.0.0.5:4000", text)
        self.assertIn("from Twisted", text)
        self.assertNotIn("not at info", text)

    def test_json(self):
        svc = self.start(to="file", format="json")
        logs.Logger("grott.test").info("datalogger {serial} connected", serial="AB1",
                                        inverters=["INV1"])
        svc.stopService()
        lines = read(os.path.join(self.tmp, "grott.log")).splitlines()
        events = [eventFromJSON(line) for line in lines]
        [event] = [e for e in events if e.get("log_namespace") == "grott.test"]
        self.assertEqual(event["serial"], "AB1")
        self.assertEqual(event["inverters"], ["INV1"])
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["log_format"], "datalogger {serial} connected")
        self.assertFalse(any(line.startswith("\x1e") for line in lines))

    def test_linesBeforeTheFileOpensAreKept(self):
        svc = logs.LoggingService(LogConfig(to="file", file=os.path.join(self.tmp, "grott.log")),
                                  (), self.clock)
        svc.privilegedStartService()
        TwistedLogger(namespace="twisted.test", observer=globalLogPublisher).info("bound early")
        svc.startService()
        svc.stopService()
        text = read(os.path.join(self.tmp, "grott.log"))
        self.assertLess(text.index("bound early"), text.index("logging at level"))

    def test_stoppedBeforeStarting(self):
        svc = logs.LoggingService(LogConfig(to="file", file=os.path.join(self.tmp, "grott.log")),
                                  (), self.clock)
        svc.privilegedStartService()
        early = svc._early
        svc.stopService()
        TwistedLogger(namespace="twisted.test", observer=globalLogPublisher).info("later")
        self.assertEqual(early.buffer, [])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "grott.log")))

    def test_removedOnStop(self):
        svc = self.start(to="file")
        svc.stopService()
        logs.Logger("grott.test").info("after stop")
        self.assertNotIn("after stop", read(os.path.join(self.tmp, "grott.log")))

    def test_rotatesBySize(self):
        svc = self.start(to="file", max_bytes=400, keep=2)
        log = logs.Logger("grott.test")
        for n in range(60):
            log.info("line {n} of a log that must not fill the disk", n=n)
        svc.stopService()
        names = sorted(os.listdir(self.tmp))
        self.assertEqual(names, ["grott.log", "grott.log.1", "grott.log.2"])
        for name in names:
            self.assertLessEqual(os.path.getsize(os.path.join(self.tmp, name)), 600)
        self.assertIn("line 59 ", read(os.path.join(self.tmp, "grott.log")))

    def test_jsonOnStdoutWithoutHandoffWarns(self):
        self.start(format="json")
        [event] = [e for e in self.grott_events("grott.logs") if e["log_level"] == LogLevel.warn]
        self.assertIn("grott.logs.main_log", event["log_format"])


class PerDataloggerTests(LoggingCase):
    def path(self, serial):
        return os.path.join(self.tmp, "logs", f"grott_{serial}.log")

    def test_oneFilePerDatalogger(self):
        svc = self.start(per_datalogger=True)
        emit_packet("AB1")
        emit_packet("CD2", direction="server->datalogger", hex="00020006")
        emit_packet("AB1", hex="ffff")
        self.assertEqual(sorted(svc._per_datalogger.open_names()), ["AB1", "CD2"])
        close_session("AB1")
        self.assertEqual(svc._per_datalogger.open_names(), ["CD2"])
        ab1 = read(self.path("AB1")).splitlines()
        self.assertEqual(len(ab1), 3)
        self.assertIn("datalogger->server 0x0104 data 0001000600200104abcd", ab1[0])
        self.assertTrue(ab1[1].endswith("ffff"))
        self.assertTrue(ab1[2].endswith("session closed"))
        self.assertNotIn("pvpower", read(self.path("AB1")))
        self.assertIn("server->datalogger 0x0104 data 00020006", read(self.path("CD2")))
        svc.stopService()
        self.assertEqual(svc._per_datalogger, None)

    def test_decodedRecordAtDebug(self):
        self.start(per_datalogger=True, level="debug")
        emit_packet("AB1")
        self.assertIn('{"pvpower": 1234.5}', read(self.path("AB1")))

    def test_json(self):
        self.start(per_datalogger=True, format="json")
        emit_packet("AB1")
        [line] = read(self.path("AB1")).splitlines()
        event = json.loads(line)
        self.assertEqual((event["serial"], event["hex"], event["record_type"]),
                         ("AB1", PACKET["hex"], 0x0104))
        self.assertNotIn("record", event)

    def test_otherEventsOfAnOpenDatalogger(self):
        self.start(per_datalogger=True)
        log = logs.Logger("grott.proxy")
        log.warn("datalogger {serial}: cannot decode", serial="XY9")  # noqa: G010
        self.assertFalse(os.path.exists(self.path("XY9")))
        emit_packet("XY9")
        log.warn("datalogger {serial}: cannot decode", serial="XY9")  # noqa: G010
        log.debug("datalogger {serial}: debug detail", serial="XY9")
        text = read(self.path("XY9"))
        self.assertIn("[grott.proxy#warn] datalogger XY9: cannot decode", text)
        self.assertNotIn("debug detail", text)

    def test_hostileSerialStaysInTheDirectory(self):
        self.start(per_datalogger=True)
        emit_packet("../../evil")
        emit_packet("")
        emit_packet(None)
        self.assertEqual(os.listdir(os.path.join(self.tmp, "logs")), ["grott_______evil.log"])
        self.assertEqual(sorted(os.listdir(self.tmp)), ["logs"])
        self.assertEqual(safe_name("a/b\\c.d\x00"), "a_b_c_d_")
        self.assertEqual(len(safe_name("X" * 500)), 64)

    def test_rotatesBySize(self):
        self.start(per_datalogger=True, max_bytes=300, keep=2)
        for n in range(40):
            emit_packet("AB1", hex=f"{n:08x}")
        names = sorted(os.listdir(os.path.join(self.tmp, "logs")))
        self.assertEqual(names, ["grott_AB1.log", "grott_AB1.log.1", "grott_AB1.log.2"])
        self.assertTrue(read(self.path("AB1")).rstrip().endswith(f"{39:08x}"))

    def test_rotatesDaily(self):
        # Local noon today, so a day's step always lands on the next date.
        self.clock = Clock()
        self.clock.advance(time.mktime(time.localtime()[:3] + (12, 0, 0, 0, 0, -1)))
        self.start(per_datalogger=True, rotate="daily", keep=2)
        days = []
        for day in range(4):
            days.append(time.strftime("%Y-%m-%d", time.localtime(self.clock.seconds())))
            emit_packet("AB1", hex=f"day{day}")
            self.clock.advance(86400)
        names = sorted(os.listdir(os.path.join(self.tmp, "logs")))
        self.assertEqual(names, ["grott_AB1.log", f"grott_AB1.log.{days[1]}",
                                 f"grott_AB1.log.{days[2]}"])
        self.assertIn("day1", read(self.path("AB1") + "." + days[1]))
        self.assertIn("day3", read(self.path("AB1")))

    def test_openFilesAreBounded(self):
        opened = []

        def opener(path):
            f = io.StringIO()
            f.name = path
            f.close = lambda: opened.remove(f)
            opened.append(f)
            return f

        dl = DataloggerLogs(self.tmp, opener=opener, max_open=2)
        for serial in ["A", "B", "C"]:
            dl({"log_namespace": "grott.packets", "serial": serial, **PACKET})
        self.assertEqual(dl.open_names(), ["B", "C"])
        self.assertEqual([os.path.basename(f.name) for f in opened],
                         ["grott_B.log", "grott_C.log"])
        dl.close_all()
        self.assertEqual(opened, [])

    def test_unwritableFileIsReportedOnce(self):
        errors = []

        def opener(path):
            raise PermissionError(13, "Permission denied", path)

        dl = DataloggerLogs(self.tmp, opener=opener, on_error=lambda *a: errors.append(a))
        packet = {"log_namespace": "grott.packets", "serial": "AB1", **PACKET}
        dl(packet)
        dl(packet)
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0][0], "AB1")
        dl(dict(packet, session_closed=True))
        dl(packet)
        self.assertEqual(len(errors), 2)

    def test_unopenableFileIsLoggedNotRaised(self):
        os.makedirs(self.path("AB1"))  # a directory where the file should be
        self.start(per_datalogger=True)
        emit_packet("AB1")
        emit_packet("AB1")
        emit_packet("CD2")
        errors = [e for e in self.grott_events("grott.logs") if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["datalogger"], "AB1")
        self.assertIn(PACKET["hex"], read(self.path("CD2")))


PASSWORD = "pw-Zq8xK3!"
TOKEN = "tok-77Ab9"


class SecretTests(LoggingCase):
    def config(self, fmt):
        return config_from_string(f"""
log:
  level: debug
  to: file
  file: {os.path.join(self.tmp, 'grott.log')}
  format: {fmt}
  per_datalogger: true
  directory: {os.path.join(self.tmp, 'logs')}
outputs:
  mqtt: {{host: 127.0.0.1, username: grott, password: "{PASSWORD}"}}
plugins:
  settings:
    weather: {{api_token: "{TOKEN}", city: Utrecht}}
""")

    def test_secretsFound(self):
        self.assertEqual(logs.secrets_in(self.config("text")), {PASSWORD, TOKEN})

    def test_text(self):
        self.check_no_secret("text")

    def test_json(self):
        self.check_no_secret("json")

    def check_no_secret(self, fmt):
        config = self.config(fmt)
        twistd_log = io.StringIO()
        twistd = textFileLogObserver(twistd_log)

        def grott_only(event):
            if event.get("log_namespace", "").startswith("grott"):
                twistd(event)

        globalLogPublisher.addObserver(grott_only)
        self.addCleanup(globalLogPublisher.removeObserver, grott_only)
        svc = logs.LoggingService.fromConfig(config, self.clock)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(lambda: svc.running and svc.stopService())

        log = logs.Logger("grott.test")
        log.debug("connecting as {user} with {password}", user="grott", password=PASSWORD)
        log.info("mqtt settings: {config.outputs.mqtt.password}", config=config)
        log.info("plugin settings {settings}", settings=config.plugins.settings)
        log.info("raw {data}", data=f"user=grott&pass={PASSWORD}".encode())
        log.info("nested {items}", items=[("a", {"k": TOKEN})])
        log.info("whole config {config!r}", config=config)
        log.info("not a secret: {x}", x="visible-marker")
        try:
            raise ValueError(f"login refused for password {PASSWORD}")
        except ValueError:
            log.failure("mqtt login failed")
        emit_packet("AB1", record={"note": f"x{TOKEN}y"})
        TwistedLogger(namespace="twisted.test", observer=globalLogPublisher).info(
            "twisted says {p}", p=PASSWORD)
        self.flushLoggedErrors(logs._RedactedError)
        svc.stopService()

        outputs = {
            "main": read(os.path.join(self.tmp, "grott.log")),
            "datalogger": read(os.path.join(self.tmp, "logs", "grott_AB1.log")),
            "twistd": twistd_log.getvalue(),
        }
        for name, text in outputs.items():
            for secret in (PASSWORD, TOKEN):
                self.assertNotIn(secret, text, name)
                if fmt == "json":
                    self.assertNotIn(json.dumps(secret)[1:-1], text, name)
        self.assertIn("visible-marker", outputs["main"])
        self.assertIn("visible-marker", outputs["twistd"])
        self.assertIn("mqtt login failed", outputs["main"])
        self.assertGreaterEqual(outputs["main"].count(logs.MASK), 6)
        self.assertIn(logs.MASK, outputs["datalogger"])
        self.assertIn("twisted says", outputs["main"])

    def test_redactLeavesCleanEventsAlone(self):
        secrets = Secrets([PASSWORD])
        event = {"log_format": "{a} {b}", "a": "x", "b": [1, {"c": "d"}], "log_namespace": "n"}
        self.assertEqual(logs.redact(event, secrets), event)
        self.assertIs(logs.redact(event, secrets)["b"], event["b"])
        self.assertIs(logs.redact(event, Secrets()), event)

    def test_brokenReprDoesNotStopLogging(self):

        class Broken:
            def __repr__(self):
                raise RuntimeError("no repr")

        got = []
        logs.Redacting(got.append, Secrets([PASSWORD]))({"log_format": "{o}", "o": Broken()})
        self.assertEqual(len(got), 1)


class HandoffTests(LoggingCase):
    def test_mainLogFactory(self):
        """
        twistd builds the observer from its name; the service finds it
        through the global publisher, without a module global.
        """
        observer = logs.main_log()
        self.assertTrue(ILogObserver.providedBy(observer))
        self.assertIsNone(logs.find_handoff())
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.assertIs(logs.find_handoff(), observer)
        observer.stdout = io.StringIO()
        self.start(format="json", to="stdout")
        self.assertIsNotNone(observer.target)
        logs.Logger("grott.test").info("to the hand-off {n}", n=3)
        lines = [eventFromJSON(line) for line in observer.stdout.getvalue().splitlines()]
        self.assertIn("to the hand-off {n}", [e["log_format"] for e in lines])
        # The rendezvous itself is in no log.
        self.assertEqual(observer.buffer, [])
        self.assertNotIn("handoff", observer.stdout.getvalue())

    def test_earlyEventsReachTheConfiguredLog(self):
        out = io.StringIO()
        handoff = logs._Handoff(out)
        handoff({"log_format": "twistd starting up", "log_level": LogLevel.info,
                 "log_namespace": "twisted.app", "log_time": 0})
        self.assertEqual(out.getvalue(), "")
        svc = self.start(format="json", handoff=handoff)
        globalLogPublisher.addObserver(handoff)
        self.addCleanup(globalLogPublisher.removeObserver, handoff)
        logs.Logger("grott.test").info("later {n}", n=2)
        events = [eventFromJSON(line) for line in out.getvalue().splitlines()]
        self.assertEqual(events[0]["log_format"], "twistd starting up")
        self.assertIn("later {n}", [e["log_format"] for e in events])
        self.assertEqual([e for e in self.grott_events("grott.logs")
                          if e["log_level"] == LogLevel.warn], [])
        svc.stopService()
        self.assertIsNotNone(handoff.target)

    def test_bufferIsBounded(self):
        handoff = logs._Handoff(io.StringIO(), limit=3)
        for n in range(10):
            handoff({"n": n})
        self.assertEqual([e["n"] for e in handoff.buffer], [0, 1, 2])


class SourceTests(SynchronousTestCase):
    def test_noPrintOrStdlibLogging(self):
        """
        grott's own code logs through twisted.logger only (console tools
        write to their stdout/stderr streams explicitly).
        """
        root = os.path.dirname(grott.__file__)
        offenders = []
        for directory, _, files in os.walk(root):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                tree = ast.parse(read(path), path)
                for node in ast.walk(tree):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                            and node.func.id == "print"):
                        offenders.append(f"{path}:{node.lineno}: print()")
                    elif isinstance(node, ast.Import) and any(
                            a.name.split(".")[0] == "logging" for a in node.names):
                        offenders.append(f"{path}:{node.lineno}: import logging")
                    elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "logging":
                        offenders.append(f"{path}:{node.lineno}: from logging import")
        self.assertEqual(offenders, [])
