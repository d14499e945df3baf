"""
Several grott instances behind a real HAProxy, one real mosquitto, the fake
cloud, and 200 simulated dataloggers, all on loopback (docs/scaling.md).

HAProxy balances by source address, as contrib/haproxy.cfg does, so the
simulated dataloggers connect from 20 loopback addresses (127.0.0.2 ...)
and spread over both instances.  Stopping one instance sends its
dataloggers, through HAProxy, to the other; no record a datalogger was
acknowledged for may be missing from MQTT.
"""

import json
import os
import re
import shutil
import socket
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

import grott
from grott.testing.fakecloud import FakeCloud
from grott.testing.simulator import DataloggerSimulation, make_specs
from tests import mosquitto, waiting
from tests.processes import OutputProcess

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(grott.__file__)))
TWISTD = "from twisted.scripts.twistd import run; run()"

#: Source addresses of the simulated dataloggers, ten dataloggers each.
SOURCES = [f"127.0.0.{n}" for n in range(2, 22)]
PER_SOURCE = 10

GROTT_CONFIG = """
instance:
  id: {name}
proxy:
  listen: "haproxy:tcp:{port}:interface=127.0.0.1"
  upstream: "tcp:127.0.0.1:{cloud}"
command:
  listen: "tcp:{command}:interface=127.0.0.1"
metrics:
  listen: "tcp:{metrics}:interface=127.0.0.1"
log:
  level: info
outputs:
  mqtt:
    host: 127.0.0.1
    port: {broker}
    discovery: false
  spool:
    directory: {spool}
control:
  mqtt: true
  answer_unknown: false
"""

HAPROXY_CONFIG = """
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    option redispatch
    retries 3
frontend dataloggers
    bind 127.0.0.1:{front}
    default_backend grott
backend grott
    balance source
    hash-type consistent
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 300ms fall 1 rise 1 on-marked-down shutdown-sessions send-proxy-v2
{servers}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Line(protocol.Protocol):
    """A raw admin-socket client: collects the answer text."""

    def connectionMade(self):
        self.text = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.text += data

    def connectionLost(self, reason):
        self.lost.callback(self.text)


def until(condition, what, seconds=60, detail=None):
    return waiting.until(reactor, condition, what, seconds=seconds, interval=0.1, detail=detail)


class HAProxyScalingTests(TestCase):
    timeout = 240

    def setUp(self):
        if HAPROXY is None:
            raise self.skipTest("haproxy is not installed (apt-get install haproxy)")
        if mosquitto.SKIP:
            raise self.skipTest(mosquitto.SKIP)
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.processes = []
        return defer.ensureDeferred(self.start())

    async def start(self):
        self.cloud = FakeCloud(reactor, keep=None)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.cloud)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.cloud.close_all)
        self.broker = mosquitto.Broker(os.path.join(self.tmp, "broker"))
        await self.broker.start()
        self.addCleanup(self.broker.stop)
        self.subscriber = mosquitto.Subscriber(self.broker.port, ["grott/#", "energy/#"])
        self.addCleanup(self.subscriber.stop)
        await self.subscriber.subscribed
        self.instances = {}
        for name in ("grott-a", "grott-b"):
            self.instances[name] = self.spawn_grott(name, port.getHost().port)
        for name, grott_instance in self.instances.items():
            await until(lambda g=grott_instance: b"can hold" in g["process"].output,
                        f"{name} to listen", detail=lambda g=grott_instance:
                        g["process"].output.decode(errors="replace"))
        self.front = free_port()
        servers = "\n".join(f"    server {name} 127.0.0.1:{g['port']} port {g['metrics']}"
                            for name, g in self.instances.items())
        config = os.path.join(self.tmp, "haproxy.cfg")
        with open(config, "w", encoding="ascii") as f:
            f.write(HAPROXY_CONFIG.format(front=self.front, servers=servers))
        self.haproxy = self.spawn("haproxy", HAPROXY, ["-db", "-f", config])
        await until(lambda: self.accepting(self.front), "haproxy to listen",
                    detail=lambda: self.haproxy.output.decode(errors="replace"))

    def spawn(self, name, executable, args, env=None):
        process = OutputProcess(name)
        transport = reactor.spawnProcess(process, executable, [executable, *args],
                                         env=env or os.environ.copy(), path=self.tmp)
        self.processes.append((process, transport))

        def stop():
            if not process.done:
                transport.signalProcess("KILL")
                return process.ended
        self.addCleanup(stop)
        process.transport = transport
        return process

    def spawn_grott(self, name, cloud):
        ports = {"port": free_port(), "command": free_port(), "metrics": free_port()}
        path = os.path.join(self.tmp, f"{name}.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(GROTT_CONFIG.format(name=name, cloud=cloud, broker=self.broker.port,
                                        spool=os.path.join(self.tmp, f"spool-{name}"), **ports))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [REPO, env.get("PYTHONPATH")] if p)
        process = self.spawn(name, sys.executable,
                             ["-c", TWISTD, "-n", "--pidfile=", "grott", "--config", path], env)
        return dict(process=process, **ports)

    @staticmethod
    def accepting(port):
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    async def admin(self, name, command):
        """
        The answer of instance C{name}'s admin socket to C{command}.
        """
        g = self.instances[name]
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", g["command"]).connect(
            protocol.Factory.forProtocol(_Line))
        client.transport.write(command.encode("ascii") + b"\r\nquit\r\n")
        return (await client.lost).decode()

    async def held_by(self, name):
        """
        The datalogger serials instance C{name} holds, from its `list`.
        """
        return set(re.findall(r"\b(SIM\d{7})\b", await self.admin(name, "list")))

    def simulations(self):
        sims = []
        for index, source in enumerate(SOURCES):
            specs = make_specs(
                PER_SOURCE, prefix=f"SIM{index:02d}", protocol=6,
                family="min" if index % 2 else "classic", interval=1.5, first_data=0.5,
                ping_interval=0, reconnect_delay=0.5)
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.front,
                                          bindAddress=(source, 0))
            sims.append(DataloggerSimulation(reactor, endpoint, specs))
        return sims

    def records_in_mqtt(self):
        """
        (datalogger, time) of every record published, live or buffered.
        """
        seen = {}
        for topic, payload, retain in self.subscriber.messages:
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(message, dict) or "values" not in message:
                continue
            key = (message.get("datalogger"), message.get("time"))
            seen[key] = seen.get(key, 0) + 1
        return seen

    def replies(self, serial, request_id):
        return [m for topic, payload, _ in self.subscriber.messages
                if topic == f"grott/{serial}/reply"
                for m in [json.loads(payload)] if m.get("id") == request_id]

    async def control(self, serial, request_id, answering, silent):
        """
        A read request for C{serial}: exactly one reply, from the instance
        C{answering} that holds it; instance C{silent} (None: none) counts
        it as not held and stays quiet.
        """
        self.subscriber.client.publish(
            f"grott/{serial}/request",
            json.dumps({"id": request_id, "op": "read", "register": 3, "count": 1}), qos=1)
        await until(lambda: self.replies(serial, request_id), f"the reply to {request_id}",
                    seconds=30)
        if silent is not None:
            before = self.not_held[silent]

            async def ignored():
                report = await self.admin(silent, "stats")
                found = re.search(r"not_held=(\d+)", report)
                return found and int(found.group(1)) > before
            await until(ignored, f"{silent} to see {request_id}", seconds=30)
            self.not_held[silent] += 1
        [reply] = self.replies(serial, request_id)
        self.assertTrue(reply["ok"], reply)
        status = [json.loads(p) for t, p, _ in self.subscriber.messages
                  if t == f"grott/{serial}/status"]
        self.assertEqual(status[-1]["instance"], answering, status[-1])

    def test_spreadStopOneAndMove(self):
        return defer.ensureDeferred(self.spread_stop_and_move())

    async def spread_stop_and_move(self):
        sims = self.simulations()
        for sim in sims:
            sim.start()
        self.addCleanup(lambda: defer.gatherResults([s.stop() for s in sims]))
        states = [state for sim in sims for state in sim.states]
        serials = {state.spec.serial for state in states}
        self.assertEqual(len(serials), 200)

        await until(lambda: all(s.acked_records >= 2 for s in states),
                    "every datalogger to have records acknowledged", seconds=90)
        held = {name: await self.held_by(name) for name in self.instances}
        self.assertEqual(held["grott-a"] | held["grott-b"], serials)
        self.assertFalse(held["grott-a"] & held["grott-b"])
        self.assertTrue(held["grott-a"] and held["grott-b"], held)
        # Sessions see each datalogger's own address (PROXY protocol v2),
        # not HAProxy's; the stats report names the instance.
        for name in self.instances:
            report = await self.admin(name, "stats")
            self.assertIn(f"; instance {name}", report)
            peers = set(re.findall(r"peer=(127\.0\.0\.\d+):\d+", report))
            self.assertTrue(peers, report)
            self.assertLessEqual(peers, set(SOURCES), report)

        # Control requests are answered once, by the instance holding the
        # datalogger; the other one stays silent.
        self.not_held = {"grott-a": 0, "grott-b": 0}
        on_a, on_b = sorted(held["grott-a"])[0], sorted(held["grott-b"])[0]
        await self.control(on_a, "r1", "grott-a", "grott-b")
        await self.control(on_b, "r2", "grott-b", "grott-a")

        # Stop grott-a: its dataloggers move to grott-b through HAProxy.
        moved = held["grott-a"]
        acked_before = {s.spec.serial: s.acked_records for s in states}
        a = self.instances["grott-a"]["process"]
        a.transport.signalProcess("TERM")
        await a.ended

        async def all_on_b():
            return await self.held_by("grott-b") == serials
        await until(all_on_b, "every datalogger on grott-b", seconds=90)
        # Control followed the datalogger.
        await self.control(on_a, "r3", "grott-b", None)
        await until(lambda: all(s.acked_records >= acked_before[s.spec.serial] + 2
                                for s in states),
                    "records acknowledged after the move", seconds=90)
        await defer.gatherResults([s.stop() for s in sims])

        acked = {s.spec.serial: s.acked_records for s in states}
        await until(lambda: all(
            sum(1 for (dl, _), n in self.records_in_mqtt().items() if dl == serial)
            >= acked[serial] for serial in serials), "every acknowledged record in MQTT",
            seconds=60)
        for serial in serials:
            cloud = self.cloud.counts[serial]
            self.assertGreaterEqual(cloud["data"] + cloud["buffered_data"], acked[serial])
        self.assertTrue(moved)
