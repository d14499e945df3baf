"""
A real Home Assistant core for the discovery tests: started from its own
venv (Home Assistant 2024.3 pins paho-mqtt 1.6.1 and needs josepy<2, so it
cannot share grott's), with a prepared config directory: an owner with a
long-lived access token in .storage/auth and an MQTT config entry in
.storage/core.config_entries, so nothing needs onboarding.

The venv is GROTT_HA_VENV, or .ha-venv in the repository root (.ci/run
creates it); without one the tests skip and say how to make it.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import time

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from grott.config import config_from_dict
from grott.service import makeService
from tests import mosquitto
from tests.mosquitto import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("GROTT_HA_VENV") or os.path.join(ROOT, ".ha-venv")
PYTHON = os.path.join(VENV, "bin", "python")
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ha_client.py")


def _environment():
    """
    The environment for Home Assistant's processes: without grott's Python
    path (trial's workers set PYTHONPATH to their own sys.path, which would
    put grott's paho-mqtt 2 and cryptography in front of Home Assistant's).
    """
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


def _skip_reason():
    if not os.path.exists(PYTHON):
        return (f"no Home Assistant venv at {VENV} (python3.11 -m venv .ha-venv && .ha-venv/bin/"
                "pip install 'homeassistant==2024.3.*' 'josepy<2' 'paho-mqtt==1.6.1'; "
                "or set GROTT_HA_VENV)")
    try:
        subprocess.run([PYTHON, "-c", "import homeassistant.const, paho.mqtt.client"],
                       check=True, capture_output=True, timeout=60, env=_environment())
    except (subprocess.SubprocessError, OSError) as e:
        return f"the Home Assistant venv at {VENV} is incomplete: {e}"
    return None


SKIP = _skip_reason()


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(token_id, jwt_key):
    """
    An HS256 JWT the way Home Assistant issues one for a refresh token.
    """
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"iss": token_id, "iat": now, "exp": now + 86400}).encode())
    signature = hmac.new(jwt_key.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{_b64(signature.digest())}"


class _Process(protocol.ProcessProtocol):

    def __init__(self, keep=20000):
        self.output = b""
        self.errors = b""
        self.keep = keep
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data
        if self.keep is not None:
            self.output = self.output[-self.keep:]

    def errReceived(self, data):
        self.errors = (self.errors + data)[-20000:]

    def processEnded(self, reason):
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.ended.callback(None)


class HomeAssistant:
    """
    One Home Assistant in C{directory}, talking to the broker on C{mqtt_port}.
    """

    def __init__(self, directory, mqtt_port):
        self.directory = os.path.abspath(directory)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = os.path.join(self.directory, "home-assistant.log")
        storage = os.path.join(self.directory, ".storage")
        os.makedirs(storage, exist_ok=True)
        with open(os.path.join(self.directory, "configuration.yaml"), "w",
                  encoding="utf-8") as f:
            f.write("homeassistant:\n  name: grott test\n  latitude: 52.1\n  longitude: 5.1\n"
                    "  elevation: 0\n  unit_system: metric\n  time_zone: UTC\n"
                    "  currency: EUR\n  country: NL\n"
                    f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
                    "api:\nwebsocket_api:\nlogger:\n  default: warning\n")
        user_id, token_id = secrets.token_hex(16), secrets.token_hex(16)
        jwt_key = secrets.token_hex(32)
        created = "2024-03-01T00:00:00+00:00"
        auth = {"version": 1, "minor_version": 1, "key": "auth", "data": {
            "users": [{"id": user_id, "group_ids": ["system-admin"], "is_owner": True,
                       "is_active": True, "name": "grott test", "system_generated": False,
                       "local_only": False}],
            "groups": [{"id": "system-admin", "name": "Administrators"},
                       {"id": "system-users", "name": "Users"},
                       {"id": "system-read-only", "name": "Read Only"}],
            "credentials": [],
            "refresh_tokens": [{
                "id": token_id, "user_id": user_id, "client_id": None,
                "client_name": "grott test", "client_icon": None,
                "token_type": "long_lived_access_token", "created_at": created,
                "access_token_expiration": 86400.0, "token": secrets.token_hex(64),
                "jwt_key": jwt_key, "last_used_at": None, "last_used_ip": None,
                "credential_id": None, "version": "2024.3.0"}]}}
        entries = {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {
            "entries": [{"entry_id": "grotttestmqtt0001", "version": 1, "minor_version": 1,
                         "domain": "mqtt", "title": "127.0.0.1",
                         "data": {"broker": "127.0.0.1", "port": mqtt_port,
                                  "discovery": True},
                         "options": {}, "pref_disable_new_entities": False,
                         "pref_disable_polling": False, "source": "user",
                         "unique_id": None, "disabled_by": None}]}}
        for name, content in (("auth", auth), ("core.config_entries", entries),
                              ("onboarding", {"version": 4, "minor_version": 1,
                                              "key": "onboarding",
                                              "data": {"done": ["user", "core_config",
                                                                "analytics",
                                                                "integration"]}})):
            with open(os.path.join(storage, name), "w", encoding="utf-8") as f:
                json.dump(content, f)
        self.token = access_token(token_id, jwt_key)
        self.process = None
        self.watcher = None
        self.agent = Agent(reactor)

    def start(self):
        """
        Start it; fires once the REST API answers (Home Assistant is up).
        """
        self.process = _Process()
        reactor.spawnProcess(self.process, PYTHON, [
            PYTHON, "-m", "homeassistant", "--config", self.directory, "--skip-pip",
            "--log-file", self.log_file, "--log-no-color"], env=_environment())
        return defer.Deferred.fromCoroutine(self._until_up())

    async def _until_up(self, deadline=150.0):
        give_up = reactor.seconds() + deadline
        while True:
            if reactor.seconds() > give_up:
                raise RuntimeError(f"Home Assistant's API did not answer within {deadline} s:\n"
                                   + "\n".join(line for line in self.log().splitlines()
                                               if "ERROR" in line)[-3000:])
            if self.process.ended.called:
                raise RuntimeError("Home Assistant exited: "
                                   + self.process.errors.decode(errors="replace"))
            if "Activating recovery mode" in self.log():
                # Integrations failed to load (missing requirements): say which.
                raise RuntimeError("Home Assistant went into recovery mode:\n" + "\n".join(
                    line for line in self.log().splitlines() if "ERROR" in line))
            try:
                body = await self.get("/api/")
            except Exception:  # noqa: BLE001 - not listening yet
                body = None
            if body and b"API running" in body:
                return
            await deferLater(reactor, 0.5, lambda: None)

    async def get(self, path):
        response = await self.agent.request(
            b"GET", (self.url + path).encode(),
            Headers({b"Authorization": [f"Bearer {self.token}".encode()]}))
        return await readBody(response)

    async def states(self):
        return {s["entity_id"]: s for s in json.loads(await self.get("/api/states"))}

    async def query(self):
        """
        States, entity registry and device registry through the websocket API.
        """
        process = _Process(keep=None)
        reactor.spawnProcess(process, PYTHON, [PYTHON, CLIENT, "query", self.url, self.token],
                             env=_environment())
        await process.ended
        try:
            return json.loads(process.output)
        except ValueError:
            raise RuntimeError("the websocket query failed: "
                               + process.errors.decode(errors="replace")) from None

    async def call(self, domain, service, data):
        """
        Call a service through the websocket API, as the UI does.
        """
        process = _Process(keep=None)
        reactor.spawnProcess(process, PYTHON, [PYTHON, CLIENT, "call", self.url, self.token,
                                               domain, service, json.dumps(data)],
                             env=_environment())
        await process.ended
        if process.exit_code != 0:
            raise RuntimeError("the service call failed: "
                               + process.errors.decode(errors="replace"))

    def watch(self, path):
        """
        Record every state change into C{path} (JSON lines) from now on;
        fires once the subscription stands.
        """
        self.watcher = _Process()
        reactor.spawnProcess(self.watcher, PYTHON,
                             [PYTHON, CLIENT, "watch", self.url, self.token, path],
                             env=_environment())
        return defer.Deferred.fromCoroutine(self._watching(path))

    async def _watching(self, path):
        while not (os.path.exists(path) and os.path.getsize(path)):
            if self.watcher.ended.called:
                raise RuntimeError("watcher exited: " + self.watcher.errors.decode())
            await deferLater(reactor, 0.1, lambda: None)

    def log(self):
        if not os.path.exists(self.log_file):
            return ""
        with open(self.log_file, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        waits = []
        for process in (self.watcher, self.process):
            if process is not None and not process.ended.called:
                process.transport.signalProcess("TERM")
                waits.append(process.ended)
        return defer.gatherResults(waits)


async def broker_and_home_assistant(case):
    """
    A mosquitto and a Home Assistant that uses it, both started for the
    test case C{case} and stopped after it: (broker, hass).
    """
    broker = mosquitto.Broker(case.mktemp())
    await broker.start()
    case.addCleanup(broker.stop)
    hass = HomeAssistant(case.mktemp(), broker.port)
    case.addCleanup(hass.stop)
    await hass.start()
    return broker, hass


def grott_for(case, broker, **sections):
    """
    grott (makeService) in cloud-free mode with discovery on, publishing to
    C{broker}, started for C{case}; C{sections} add to the configuration.

    @return: (the service, a client endpoint of its datalogger port).
    """
    config = config_from_dict(dict({
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "upstream": "none"},
        "command": {"listen": "none"}, "metrics": {"listen": "none"},
        "plugins": {"directory": os.path.abspath(case.mktemp())},
        "outputs": {"mqtt": {"host": "127.0.0.1", "port": broker.port, "discovery": True}},
    }, **sections), "ha-test.yaml")
    top = makeService(config, reactor)
    top.privilegedStartService()
    top.startService()
    case.addCleanup(top.stopService)
    port = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
    return top, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
