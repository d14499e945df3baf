"""
What relaying through grott costs, next to no proxy and to `twistd portforward`.

    python bench/relay.py --scenario all          # about 3 minutes
    python bench/relay.py --scenario rate1000

Each scenario runs three times on loopback, one after the other, with the
same traffic: the load generator (bench/loadgen.py) talking straight to the
fake cloud (C{direct}), through `twistd portforward` (C{portforward}: a relay
that does no framing or decoding, the cheapest Twisted proxy there is), and
through grott (C{grott}: decoder on, no outputs, so only announces are
decoded; C{--targets ...,grott-decodeall} adds grott decoding every record).  Every process is its own
subprocess (fake cloud: `grott fake-cloud`; relays: twistd -n); CPU time and
RSS of the relay come from /proc/PID/stat and /proc/PID/status, as deltas
over the measurement window.  One JSON line per scenario goes to standard
output and all of them to bench/results.json.  Everything it started is
killed at the end of each run, and no run lasts longer than its time bound.

Figures, per run: records acknowledged per second (a record is one
585-byte protocol-6 data record up and its 11-byte ack down), the round trip
datalogger -> cloud ack -> datalogger (p50/p99, milliseconds, as the load
generator sees it), the relay's CPU milliseconds per 1,000 records, its
peak RSS (VmHWM) and its RSS growth per connection, plus the CPU shares of
the load generator, the fake cloud and of everything else on the machine
(other work disturbs the figures; see foreign_cpu_percent).
"""

import argparse
import contextlib
import datetime
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results.json")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

#: name -> what the load generator does; every run is bounded by `bound` seconds.
SCENARIOS = {
    # One datalogger sending its next record as soon as the ack is back:
    # the unloaded round trip, and what one connection can do.
    "one": {"count": 1, "mode": "flood", "warmup": 1.0, "duration": 5.0, "bound": 30},
    # 1,000 dataloggers, one record per second each, evenly staggered.
    "rate1000": {"count": 1000, "mode": "rate", "interval": 1.0, "warmup": 2.0, "duration": 8.0,
                 "bound": 45},
    # 9,000 dataloggers, mostly idle: one record every 20 s each (450/s).
    "idle9000": {"count": 9000, "mode": "rate", "interval": 20.0, "warmup": 1.0, "duration": 6.0,
                 "bound": 60},
    # 100 dataloggers, each sending its next record as soon as its ack is back.
    "max": {"count": 100, "mode": "flood", "warmup": 2.0, "duration": 8.0, "bound": 40},
}
TARGETS = ("direct", "portforward", "grott")
#: Not run by default: grott with its decoder off (bench/nodecode.tac), and
#: grott decoding every record into a sink that discards it
#: (bench/decodeall.tac: what an enabled output adds before its own work).
EXTRA_TACS = {"grott-nodecode": "nodecode.tac", "grott-decodeall": "decodeall.tac"}
#: Not run by default either: grott with its built-in MQTT output on, the
#: settings a user gets by adding `outputs: mqtt:` with `discovery: true`
#: (QoS 1, the on-disk spool), publishing to a mosquitto the run starts;
#: grott-mqtt-nospool is the same with `spool: false` (records wait in the
#: plugin queue, in memory, instead of the spool file).  Target -> extra
#: lines of the outputs.mqtt section.
MQTT_TARGETS = {"grott-mqtt": "", "grott-mqtt-nospool": "    spool: false\n"}
EXTRA_TARGETS = tuple(EXTRA_TACS) + tuple(MQTT_TARGETS)
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
#: The shared topic every record goes to (outputs.mqtt.topic's default).
MQTT_TOPIC = "energy/growatt"
#: Seconds a grott-mqtt run may take after the window to hand its backlog to
#: the broker (added to the scenario's time bound).
MQTT_DRAIN_BOUND = 60.0

GROTT_CONFIG = """\
proxy:
  listen: "tcp:{port}:interface=127.0.0.1"
  upstream: "tcp:127.0.0.1:{cloud}"
command:
  listen: {command}
metrics:
  listen: none
log:
  level: warn
"""

MQTT_CONFIG = """\
outputs:
  mqtt:
    host: 127.0.0.1
    port: {broker}
    discovery: true
{extra}  spool:
    directory: {spool}
"""

#: The broker: mosquitto's defaults, except that the counting subscriber may
#: have many QoS 1 messages in flight (it acknowledges once per read) and
#: nothing is persisted.
MOSQUITTO_CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 1000
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
"""

#: twistd's module has no __main__ block: run it the way the twistd script does.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


class BenchError(Exception):
    pass


class BenchSkip(BenchError):
    """The target cannot run on this machine (a missing binary)."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid):
    """VmRSS and VmHWM (peak RSS) in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def machine_busy():
    """Busy and total CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    total = sum(ticks[:8])
    return (total - idle) / TICK, total / TICK


def wait_listening(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"process {proc.args[:4]} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listening on {port}")


class Run:
    """
    One scenario against one target: start, measure, kill.
    """

    def __init__(self, scenario, target, workdir, profile=None, warmup=None):
        self.profile = profile if target != "direct" else None
        self.name = scenario
        self.spec = dict(SCENARIOS[scenario])
        if warmup is not None:
            self.spec["bound"] += max(0.0, warmup - self.spec["warmup"])
            self.spec["warmup"] = warmup
        self.target = target
        self.workdir = workdir
        self.procs = {}
        self.deadline = time.monotonic() + self.spec["bound"]
        self._lines = {}
        self.command_port = None

    def spawn(self, role, argv, **kw):
        path = os.path.join(self.workdir, f"{self.name}-{self.target}-{role}.log")
        with open(path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=self.workdir, stdout=kw.pop("stdout", log),
                                    stderr=log, **kw)
        self.procs[role] = proc
        return proc

    def start(self):
        cloud_port = free_port()
        cloud = self.spawn("cloud", [sys.executable, "-m", "grott.cli", "fake-cloud", "--listen",
                                     f"tcp:{cloud_port}:interface=127.0.0.1:backlog=1024",
                                     "--keep", "0"])
        wait_listening(cloud_port, cloud, self.deadline)
        port = cloud_port
        if self.target == "portforward":
            port = free_port()
            relay = self.spawn("relay", [sys.executable, "-c", TWISTD, "-n", "--pidfile=",
                                         "portforward", "-p", f"tcp:{port}:interface=127.0.0.1",
                                         "-h", "127.0.0.1",
                                         "-d", str(cloud_port)])
            wait_listening(port, relay, self.deadline)
        elif self.target == "grott" or self.target in EXTRA_TARGETS:
            port = free_port()
            config = os.path.join(self.workdir, f"{self.name}-{self.target}.yaml")
            text = GROTT_CONFIG.format(port=port, cloud=cloud_port, command="none")
            if self.target in MQTT_TARGETS:
                text = self.start_mqtt(port, cloud_port)
            with open(config, "w") as f:
                f.write(text)
            if self.target == "grott" or self.target in MQTT_TARGETS:
                argv = ["grott", "--config", config]
            else:
                argv = ["-y", os.path.join(HERE, EXTRA_TACS[self.target])]
            relay = self.spawn("relay", [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *argv],
                               env=dict(os.environ, GROTT_BENCH_CONFIG=config))
            wait_listening(port, relay, self.deadline)
        # Let the probe connection and start-up settle before the baseline.
        time.sleep(0.5)
        self.baseline = memory(self.procs["relay"].pid) if "relay" in self.procs else None
        spec = self.spec
        argv = [sys.executable, os.path.join(HERE, "loadgen.py"), "--port", str(port),
                "--count", str(spec["count"]), "--mode", spec["mode"],
                "--interval", str(spec.get("interval", 1.0)), "--warmup", str(spec["warmup"]),
                "--duration", str(spec["duration"]),
                "--connect-deadline", str(max(5.0, spec["bound"] - spec["warmup"]
                                              - spec["duration"] - 12))]
        self.spawn("loadgen", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def start_mqtt(self, port, cloud_port):
        """
        The broker and the counting subscriber for a grott-mqtt target;
        returns grott's configuration, with its admin socket on (the run
        reads the output's counters from its `stats` after the window).
        """
        if MOSQUITTO is None:
            raise BenchSkip(f"{self.target}: skipped, mosquitto is not installed "
                            "(apt-get install mosquitto)")
        self.deadline += MQTT_DRAIN_BOUND
        broker_port = free_port()
        path = os.path.join(self.workdir, f"{self.name}-{self.target}-mosquitto.conf")
        with open(path, "w") as f:
            f.write(MOSQUITTO_CONFIG.format(port=broker_port)
                    + ("user root\n" if os.getuid() == 0 else ""))
        broker = self.spawn("broker", [MOSQUITTO, "-c", path])
        wait_listening(broker_port, broker, self.deadline)
        self.spawn("subscriber", [sys.executable, os.path.join(HERE, "mqttcount.py"),
                                  str(broker_port), MQTT_TOPIC],
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self.event("subscriber").get("event") != "subscribed":
            raise BenchError(f"{self.name}/{self.target}: the subscriber did not subscribe")
        self.command_port = free_port()
        spool = os.path.join(self.workdir, f"spool-{self.name}-{self.target}")
        shutil.rmtree(spool, ignore_errors=True)
        return (GROTT_CONFIG.format(port=port, cloud=cloud_port,
                                    command=f'"tcp:{self.command_port}:interface=127.0.0.1"')
                + MQTT_CONFIG.format(broker=broker_port, extra=MQTT_TARGETS[self.target],
                                     spool=spool))

    def ask(self, role, line):
        """Send C{line} to a child's standard input; its JSON answer."""
        proc = self.procs[role]
        proc.stdin.write(line)
        proc.stdin.flush()
        return self.event(role)

    def event(self, role="loadgen"):
        """The next JSON line of a child (the load generator), within the time bound."""
        proc = self.procs[role]
        fd = proc.stdout.fileno()
        lines = self._lines.get(role, b"")
        while b"\n" not in lines:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}/{self.target}: time bound "
                                 f"{self.spec['bound']} s reached")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(f"{self.name}/{self.target}: {role} exited "
                                     f"({proc.wait()}); see its log in {self.workdir}")
                lines += chunk
        line, self._lines[role] = lines.split(b"\n", 1)
        return json.loads(line)

    def sample(self):
        now = time.monotonic()
        busy, total = machine_busy()
        cpu = {}
        for role, proc in self.procs.items():
            with contextlib.suppress(OSError):
                cpu[role] = cpu_seconds(proc.pid)
        return now, busy, total, cpu

    def measure(self):
        connected = self.event()
        if connected.get("event") != "connected":
            raise BenchError(f"unexpected {connected}")
        ready = self.event()
        if ready.get("event") != "ready":
            raise BenchError(f"unexpected {ready}")
        self.window_stats = None
        if self.target in MQTT_TARGETS:
            self.window_stats = parse_mqtt_stats(self.admin_stats())
        before = self.sample()
        self.procs["loadgen"].stdin.write(b"go\n")
        self.procs["loadgen"].stdin.flush()
        profiler = self.start_profiler()
        result = self.event()
        after = self.sample()
        if profiler is not None:
            try:
                profiler.wait(timeout=max(1.0, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()
        if result.get("event") != "result":
            raise BenchError(f"unexpected {result}")
        out = self.figures(connected, result, before, after)
        if self.target in MQTT_TARGETS:
            out.update(self.mqtt_figures(result, before))
        return out

    def admin_stats(self):
        """grott's `stats` report, from its admin socket, as lines."""
        data = b""
        with socket.create_connection(("127.0.0.1", self.command_port), 5) as s:
            s.settimeout(5)
            s.sendall(b"stats\n")
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode("latin-1").splitlines()

    def mqtt_figures(self, result, before):
        """
        After the window: wait until grott handed everything queued to the
        broker and had it acknowledged (the load generator has gone, so
        nothing new arrives but the dataloggers' "offline"), then read what
        the output got, published and dropped, and what the subscriber got.
        """
        started = time.monotonic()
        while True:
            stats = parse_mqtt_stats(self.admin_stats())
            if stats is not None and stats["drained"]:
                break
            if time.monotonic() > self.deadline:
                raise BenchError(f"{self.name}/{self.target}: the MQTT output did not drain "
                                 f"within the time bound: {stats}")
            time.sleep(0.25)
        drained = self.sample()
        drain_seconds = time.monotonic() - started
        # The broker has acknowledged every message; wait for it to pass
        # the last ones on to the subscriber.
        last, steady = None, time.monotonic()
        while True:
            got = self.ask("subscriber", b"count\n")["messages"]
            if got >= stats["published"] or time.monotonic() - steady > 2.0:
                break
            if got != last:
                last, steady = got, time.monotonic()
            time.sleep(0.1)
        relay_cpu = drained[3]["relay"] - before[3]["relay"]
        records = result["records_acked"]
        return {
            "mqtt_records": stats["records"],
            "mqtt_published": stats["published"],
            "mqtt_dropped": stats["dropped"],
            "mqtt_dropped_from_queue": stats["dropped_from_queue"],
            "mqtt_dropped_from_spool": stats["dropped_from_spool"],
            # From the window's start on (the warm-up is where a new device's
            # discovery messages go out).
            "mqtt_dropped_since_window": stats["dropped"] - self.window_stats["dropped"],
            "mqtt_failed": stats["failed"],
            "mqtt_discovery_configs": stats["discovery_configs"],
            "broker_received": got,
            "mqtt_drain_seconds": round(drain_seconds, 2),
            # The window's records including the MQTT work that was still
            # queued when the window ended (and the dataloggers' goodbyes).
            "cpu_ms_per_1000_incl_drain": round(relay_cpu * 1e6 / records, 1) if records
            else None,
            "broker_cpu_percent": round((drained[3].get("broker", 0) - before[3].get("broker", 0))
                                        / (drained[0] - before[0]) * 100, 1),
        }

    def start_profiler(self):
        """
        py-spy on the relay for the window (it slows the relay down):
        collapsed stacks to PROFILE-SCENARIO-TARGET.txt.
        """
        if self.profile is None:
            return None
        pyspy = os.environ.get("PYSPY") or shutil.which("py-spy")
        if pyspy is None:
            raise BenchError("--profile needs py-spy (pip install py-spy, or PYSPY=/path)")
        out = f"{self.profile}-{self.name}-{self.target}.txt"
        return subprocess.Popen(
            [pyspy, "record", "--nonblocking", "--format", "raw", "--rate", "250",
             "-d", str(int(self.spec["duration"])), "-o", out, "-p", str(self.procs["relay"].pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def figures(self, connected, result, before, after):
        elapsed = after[0] - before[0]
        cpu = {role: after[3][role] - before[3][role] for role in after[3] if role in before[3]}
        mine = sum(cpu.values())
        machine = (after[1] - before[1]) / elapsed * 100
        out = {
            "dataloggers": result["dataloggers"],
            "connect_seconds": connected["connect_seconds"],
            "connect_failures": connected["connect_failures"],
            "records_per_second": result["records_per_second"],
            "latency_ms": result["latency_ms"],
            "loadgen_cpu_percent": round(cpu.get("loadgen", 0) / elapsed * 100, 1),
            "cloud_cpu_percent": round(cpu.get("cloud", 0) / elapsed * 100, 1),
            "foreign_cpu_percent": round(max(0.0, machine - mine / elapsed * 100), 1),
            "errors": result["unexpected_packets"] + result["connections_lost"],
        }
        if "relay" in self.procs:
            records = result["records_acked"]
            relay_cpu = cpu["relay"]
            mem = memory(self.procs["relay"].pid)
            growth = mem["VmRSS"] - self.baseline["VmRSS"]
            out.update({
                "cpu_ms_per_1000": round(relay_cpu * 1e6 / records, 1) if records else None,
                "cpu_percent": round(relay_cpu / elapsed * 100, 1),
                # What one fully used core would relay at this cost per record.
                "records_per_cpu_second": round(records / relay_cpu) if relay_cpu else None,
                "peak_rss_mb": round(mem["VmHWM"] / 2**20, 1),
                "rss_mb_before_load": round(self.baseline["VmRSS"] / 2**20, 1),
                # Page-granular noise swamps this below a few hundred connections.
                "rss_kb_per_connection": (round(growth / 1024 / result["dataloggers"], 1)
                                          if result["dataloggers"] >= 100 else None),
            })
        return out

    def log_tails(self, size=600):
        tails = []
        for role in self.procs:
            path = os.path.join(self.workdir, f"{self.name}-{self.target}-{role}.log")
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - size))
                text = f.read().decode("utf-8", "replace").strip()
                if text:
                    tails.append(f"\n[{role} log] {text}")
        return "".join(tails)

    def stop(self):
        """Kill what this run started: load generator, relay, broker, cloud."""
        roles = ("loadgen", "relay", "subscriber", "broker", "cloud")
        for role in roles:
            proc = self.procs.get(role)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for role in roles:
            proc = self.procs.get(role)
            if proc is None:
                continue
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdin:
                proc.stdin.close()
            if proc.stdout:
                proc.stdout.close()


_PLUGIN = re.compile(r"plugin mqtt: delivered=(\d+) failed=(\d+) dropped=(\d+) queued=(\d+)")
_SPOOL = re.compile(r"spool mqtt: queued=(\d+) .*delivered=(\d+) retried=\d+ dropped=(\d+) "
                    r"rejected=(\d+)")
_OUTPUT = re.compile(r"mqtt: (?:not )?connected to \S+, (\d+) record\(s\) awaiting the broker, "
                     r"(\d+) failed.* (\d+) discovery config")


def parse_mqtt_stats(lines):
    """
    The MQTT output's counters from grott's `stats` report: records it got
    (C{records}), acknowledged by the broker (C{published}), dropped from
    its queue or its spool (C{dropped}), failed, and whether nothing is left
    to send (C{drained}); None if the report has no MQTT output.
    """
    text = "\n".join(lines)
    plugin, output = _PLUGIN.search(text), _OUTPUT.search(text)
    if plugin is None or output is None:
        return None
    delivered, failed, dropped, queued = map(int, plugin.groups())
    awaiting, output_failed, configs = map(int, output.groups())
    records = delivered + failed + dropped + queued
    spool = _SPOOL.search(text)
    spool_dropped = 0
    if spool is not None:
        # The host hands records to the spool; the spool's loop to the broker.
        spooled, published, spool_dropped, rejected = map(int, spool.groups())
        left = queued + spooled + awaiting
        spool_dropped += rejected
    else:
        # Without a spool a record counts as delivered once paho has it.
        published = delivered - output_failed - awaiting
        left = queued + awaiting
    return {"records": records, "published": published, "dropped": dropped + spool_dropped,
            "dropped_from_queue": dropped, "dropped_from_spool": spool_dropped,
            "failed": failed + output_failed, "discovery_configs": configs,
            "drained": left == 0}


def grott_decodes(workdir):
    """
    What grott, built from the benchmark's configuration, decodes: its
    proxy factory has a decoder, and decodes data records only when its
    record sink wants them (an output or plugin enabled); announces are
    always decoded.  Built on a MemoryReactor, as `grott check` does.
    """
    from twisted.internet.testing import MemoryReactor

    from grott.config import config_from_string
    from grott.service import makeService
    config = config_from_string(GROTT_CONFIG.format(port=5279, cloud=5280, command="none"),
                                "bench")
    top = makeService(config, MemoryReactor())
    factory = top.getServiceNamed("proxy").factory
    if factory.decode is None:
        return "nothing (no decoder)"
    if factory.sink is not None and factory.sink.wantsRecords():
        return "every record"
    return ("decoder on; announces only: no output consumes records "
            "(grott-decodeall decodes every record)")


def ratios(runs):
    """
    Each grott run against portforward and direct, measured in the same run.
    """
    pf, direct = runs.get("portforward"), runs.get("direct")
    out = {}

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    for name in ("grott", *EXTRA_TARGETS):
        run = runs.get(name)
        if run and pf:
            out[f"throughput_{name}_vs_portforward"] = ratio(run["records_per_second"],
                                                             pf["records_per_second"])
            out[f"cpu_per_record_{name}_vs_portforward"] = ratio(run["cpu_ms_per_1000"],
                                                                 pf["cpu_ms_per_1000"])
            out[f"rss_per_connection_{name}_vs_portforward"] = ratio(
                run["rss_kb_per_connection"], pf["rss_kb_per_connection"])
            if "cpu_ms_per_1000_incl_drain" in run:
                out[f"cpu_per_record_incl_drain_{name}_vs_portforward"] = ratio(
                    run["cpu_ms_per_1000_incl_drain"], pf["cpu_ms_per_1000"])
        if run and direct:
            out[f"throughput_{name}_vs_direct"] = ratio(run["records_per_second"],
                                                        direct["records_per_second"])
    if pf and direct:
        out["throughput_portforward_vs_direct"] = ratio(pf["records_per_second"],
                                                        direct["records_per_second"])
    for name in ("grott", *EXTRA_TARGETS, "portforward"):
        run = runs.get(name)
        if run and direct:
            for q in ("p50", "p99"):
                a, b = run["latency_ms"][q], direct["latency_ms"][q]
                if a is not None and b is not None:
                    out[f"{q}_added_ms_{name}"] = round(a - b, 3)
    return out


def run_scenario(name, workdir, targets=TARGETS, profile=None, repeat=1, warmup=None):
    """
    Run C{name} against each target, C{repeat} rounds interleaved; each
    target's figures are those of its median round by throughput (other
    work on the machine moves single runs by 10-20%).
    """
    rounds = {target: [] for target in targets}
    errors = {}
    skipped = {}
    for _ in range(repeat):
        for target in targets:
            if target in skipped:
                continue
            run = Run(name, target, workdir, profile, warmup)
            try:
                run.start()
                rounds[target].append(run.measure())
            except BenchSkip as e:
                skipped[target] = str(e)
                sys.stderr.write(f"{e}\n")
            except BenchError as e:
                errors[target] = str(e) + run.log_tails()
            finally:
                run.stop()
            time.sleep(1.0)
    runs = {}
    for target, results in rounds.items():
        if not results:
            continue
        ordered = sorted(results, key=lambda r: r["records_per_second"])
        runs[target] = dict(ordered[(len(ordered) - 1) // 2])
        if repeat > 1:
            runs[target]["rounds"] = {
                "records_per_second": [r["records_per_second"] for r in results],
                "p99_ms": [r["latency_ms"]["p99"] for r in results],
                "cpu_ms_per_1000": [r.get("cpu_ms_per_1000") for r in results],
            }
            if target in MQTT_TARGETS:
                runs[target]["rounds"].update({
                    key: [r[key] for r in results]
                    for key in ("cpu_ms_per_1000_incl_drain", "mqtt_records", "mqtt_published",
                                "mqtt_dropped", "mqtt_dropped_since_window",
                                "broker_received")})
    spec = SCENARIOS[name]
    line = {
        "scenario": name,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dataloggers": spec["count"],
        "traffic": (f"{spec['count']} x one 585-byte record per {spec['interval']:g} s"
                    if spec["mode"] == "rate" else
                    f"{spec['count']} x next record as soon as the ack is back"),
        "window_seconds": spec["duration"],
        "warmup_seconds": spec["warmup"] if warmup is None else warmup,
        "rounds": repeat,
        "grott_decodes": _decodes(workdir),
        **{target: runs.get(target) for target in targets},
        "ratios": ratios(runs),
    }
    if errors:
        line["errors"] = errors
    if skipped:
        line["skipped"] = skipped
    return line


def _decodes(workdir):
    try:
        return grott_decodes(workdir)
    except Exception as e:  # noqa: BLE001 (report, do not fail the benchmark)
        return f"unknown ({type(e).__name__}: {e})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated, from " + ",".join(TARGETS + EXTRA_TARGETS))
    parser.add_argument("--results", default=RESULTS, help="where the JSON lines go")
    parser.add_argument("--workdir", help="keep configs and process logs here (default: a "
                                             "temporary directory, removed afterwards)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds per target, interleaved; the median round is reported "
                             "(each round adds the scenario's time again)")
    parser.add_argument("--warmup", type=float, metavar="SECONDS",
                        help="seconds of traffic before the window (instead of the "
                             "scenario's): with grott-mqtt, time for every device's "
                             "discovery messages to go out first")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="py-spy the relays during each window: PREFIX-SCENARIO-TARGET.txt "
                             "(collapsed stacks; slows grott, do not quote its figures)")
    options = parser.parse_args(argv)
    targets = tuple(t for t in options.targets.split(",") if t)
    if set(targets) - set(TARGETS) - set(EXTRA_TARGETS):
        parser.error(f"unknown target in {options.targets}")
    # Children inherit the raised open-file limit (9,000 connections each).
    _raise_nofile()
    names = list(SCENARIOS) if options.scenario == "all" else [options.scenario]
    sys.path.insert(0, ROOT)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    lines = []
    if options.workdir:
        os.makedirs(options.workdir, exist_ok=True)
        place = contextlib.nullcontext(os.path.abspath(options.workdir))
    else:
        place = tempfile.TemporaryDirectory(prefix="grott-bench-")
    with place as workdir:
        for name in names:
            line = run_scenario(name, workdir, targets, options.profile, options.repeat,
                                options.warmup)
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            lines.append(line)
    with open(options.results, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
