"""
A real mosquitto broker for the MQTT tests, on a free loopback port with a
generated config file, and a paho subscriber that reports to the reactor.
"""

import base64
import datetime
import hashlib
import os
import shutil
import socket

from paho.mqtt import client as paho
from twisted.internet import defer, protocol, reactor

from grott.outputs.mqtt import _in_thread

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)

SKIP = None if MOSQUITTO else "mosquitto is not installed (apt-get install mosquitto)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def password_line(user, password):
    """
    A mosquitto 2.x password file line ($7$: PBKDF2-SHA512, 101 rounds).
    """
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


class _Process(protocol.ProcessProtocol):

    def __init__(self):
        self.output = b""
        self.running = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data
        # stderr: mosquitto's stdout is block-buffered when it is a pipe.
        if self.running is not None and b" running" in self.output:
            running, self.running = self.running, None
            if not running.called:
                running.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        if self.running is not None and not self.running.called:
            running, self.running = self.running, None
            running.errback(RuntimeError("mosquitto exited: " + self.output.decode(errors="replace")))
        self.ended.callback(None)


class Broker:
    """
    mosquitto with persistence in C{directory}; restartable on the same port.
    """

    def __init__(self, directory, users=None, tls=None):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.port = free_port()
        lines = [f"listener {self.port} 127.0.0.1",
                 "persistence true",
                 f"persistence_location {self.directory}/",
                 # A slow test subscriber must not lose QoS 1 messages
                 # (mosquitto's default queue per client is 1000).
                 "max_queued_messages 100000",
                 "log_dest stderr",
                 "log_type all"]
        if os.getuid() == 0:
            lines.append("user root")
        if users:
            path = os.path.join(self.directory, "passwords")
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(password_line(u, p) for u, p in users.items())
            lines += ["allow_anonymous false", f"password_file {path}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.config = os.path.join(self.directory, "mosquitto.conf")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self.process = None

    def start(self):
        self.process = _Process()
        reactor.spawnProcess(self.process, MOSQUITTO, [MOSQUITTO, "-c", self.config],
                             env=os.environ.copy())
        return self.process.running

    def stop(self):
        """
        SIGTERM, repeated each second until mosquitto exits: one sent just
        after its "running" line can be lost (it sets its run flag after
        installing the handler).
        """
        process = self.process
        if process is None or process.ended.called:
            return defer.succeed(None)

        def term(tries):
            if process.ended.called:
                return
            process.transport.signalProcess("TERM" if tries < 10 else "KILL")
            pending.append(reactor.callLater(1, term, tries + 1))

        pending = []
        term(0)

        def done(result):
            for call in pending:
                if call.active():
                    call.cancel()
            return result
        return process.ended.addBoth(done)


class Subscriber:
    """
    A paho client subscribed to C{topics}; messages land in C{messages} as
    (topic, payload bytes, retain) on the reactor thread.
    """

    def __init__(self, port, topics, client_id="", clean=True, **connect):
        self.messages = []
        self._waiters = []
        self.subscribed = defer.Deferred()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean)
        self.client.reconnect_delay_set(0.1, 0.3)
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: reactor.callFromThread(self._suback)
        self.client.on_message = lambda c, u, m: reactor.callFromThread(
            self._got, m.topic, m.payload, m.retain)
        if connect.get("tls"):
            self.client.tls_set(ca_certs=connect["tls"])
        if connect.get("username"):
            self.client.username_pw_set(connect["username"], connect.get("password"))
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        for topic in self.topics:
            client.subscribe(topic, qos=1)

    def _suback(self):
        if not self.subscribed.called:
            self.subscribed.callback(None)

    def _got(self, topic, payload, retain, *extra):
        self.messages.append((topic, payload, retain, *extra))
        for entry in list(self._waiters):
            predicate, d = entry
            if predicate(self.messages):
                self._waiters.remove(entry)
                d.callback(self.messages)

    def wait_for(self, predicate):
        """
        Fires once C{predicate(messages)} holds.
        """
        if predicate(self.messages):
            return defer.succeed(self.messages)
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return d

    def on(self, topic):
        return [(payload, retain) for t, payload, retain in self.messages if t == topic]

    def stop(self):
        self.client.disconnect()
        return _in_thread(reactor, self.client.loop_stop)


def make_tls(directory):
    """
    A CA and a server certificate for 127.0.0.1 and localhost, as PEM files.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (Python 3.9)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("grott test CA")).issuer_name(
        name("grott test CA")).public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(
        ca.subject).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .sign(ca_key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    paths = {"ca": os.path.join(directory, "ca.pem"), "cert": os.path.join(directory, "cert.pem"),
             "key": os.path.join(directory, "key.pem")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return {k: os.path.abspath(v) for k, v in paths.items()}
