"""
The relay: one datalogger connection in, one upstream connection out.

A packet from a datalogger enters at L{DataloggerProtocol.dataReceived}, is
framed there, observed (session, decoder, record callback) in
L{DataloggerProtocol.packetFromDatalogger}, and leaves through
L{DataloggerProtocol.sendUpstream}.  The other direction enters at
L{UpstreamProtocol.dataReceived} and leaves through
L{DataloggerProtocol.packetFromUpstream}.

What is forwarded is always the original bytes, packet by packet (or
garbage run by garbage run), never a re-encoding; decoding happens beside
the relay and a decoding failure is logged and counted, never fatal.  Only
two things are not forwarded: the datalogger's replies to grott's own
commands (L{CommandHook.consume}) and, in later modes, what the configured
policy drops.

Flow control follows L{twisted.protocols.portforward}: each transport is
registered as the streaming producer of the other, so a side that stops
reading stops the other side's reads, and memory per connection stays at
one kernel buffer plus at most one packet in each framer.
"""

import datetime

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from grott import logs
from grott.codec import (
    COMMANDS,
    CodecError,
    ConfigSetRequest,
    Framer,
    Garbage,
    RecordType,
    build,
    build_ack,
)
from grott.logs import Logger
from grott.policy import CloudCommandPolicy, describe
from grott.session import CLOSED, CONNECTED, CONNECTING, FAILED, NONE, Session

__all__ = ["DataloggerProtocol", "ProxyFactory", "UpstreamProtocol"]

FROM_DATALOGGER = "datalogger->server"
TO_DATALOGGER = "server->datalogger"

_REGISTER_RECORDS = frozenset({RecordType.ANNOUNCE, RecordType.DATA, RecordType.BUFFERED_DATA,
                               RecordType.METER_DATA, RecordType.METER_LOG})

#: Session modes: relaying to the cloud, answering locally because the cloud
#: is away, or answering locally because there is no cloud (upstream: none).
RELAYING = "relaying"
LOCAL = "answering locally"
CLOUD_FREE = "cloud-free"

#: Answered packets we remember per session until the cloud answers them, so
#: that a cloud that drops mid-session leaves no packet unanswered.
_UNANSWERED_LIMIT = 64

#: Datalogger configuration register holding its clock.
CLOCK_REGISTER = 31


def _peer(transport):
    address = transport.getPeer()
    host = getattr(address, "host", None)
    if host is None:
        return str(getattr(address, "name", None) or address)
    return f"{host}:{address.port}"


@implementer(IPushProducer)
class _Throttle:
    """
    The datalogger transport as the upstream transport's producer, minus
    C{stopProducing}: a transport that loses its connection stops its
    producer, and a dead cloud must not close the datalogger when grott is
    about to answer it locally.  The relay closes both sides itself.
    """

    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        pass


class UpstreamProtocol(Protocol):
    """
    grott's connection to the Growatt server for one datalogger: everything
    it receives goes to the datalogger side.
    """

    def __init__(self, datalogger):
        self.datalogger = datalogger

    def dataReceived(self, data):
        self.datalogger.fromUpstream(data)

    def connectionLost(self, reason):
        self.datalogger.upstreamLost(reason)


class UpstreamFactory(ClientFactory):
    """
    Builds the one upstream protocol of one datalogger connection.
    """

    noisy = False

    def __init__(self, datalogger):
        self.datalogger = datalogger

    def buildProtocol(self, addr):
        return UpstreamProtocol(self.datalogger)


class DataloggerProtocol(Protocol, TimeoutMixin):
    """
    A datalogger's connection to grott, and the relay to its upstream.
    """

    log = Logger()
    session = None
    upstream = None
    _connecting = None
    _closing = False

    def connectionMade(self):
        factory = self.factory
        self.callLater = factory.clock.callLater
        self.session = Session(_peer(self.transport), factory.clock.seconds(), self.disconnect)
        self.session.send = self.sendToDatalogger
        factory.registry.add(self.session)
        self.closed = defer.Deferred()
        self._up = Framer()
        self._down = Framer()
        self._pending = []
        self._pending_size = 0
        self._unanswered = {}
        self._retries = 0
        self._retry = None
        self.setTimeout(factory.idle_timeout)
        self.log.info("datalogger connected from {peer}", peer=self.session.peer)
        if factory.upstream is None:
            self.session.mode = CLOUD_FREE
            self.session.upstream_state = NONE
        else:
            self._connecting = factory.connect_upstream(self)

    # -- datalogger -> server ---------------------------------------------

    def dataReceived(self, data):
        self.resetTimeout()
        self.session.bytes_in += len(data)
        for item in self._up.feed(data):
            if item.__class__ is Garbage:
                self.garbageFromDatalogger(item)
            else:
                self.packetFromDatalogger(item)

    def packetFromDatalogger(self, packet):
        factory = self.factory
        session = self.session
        if session.saw_datalogger_packet(packet, factory.clock.seconds()):
            self.identified()
        record = None
        if packet.record_type in _REGISTER_RECORDS:
            record = self.decode(packet)
        if logs.trace_packets:
            self.trace(FROM_DATALOGGER, packet, record)
        if factory.commands is not None and factory.commands.consume(session, packet):
            return
        if self.upstream is not None:
            if packet.record_type not in COMMANDS and factory.fallback_local:
                self._remember(packet)
            self.upstream.transport.write(packet.raw)
        elif session.mode == RELAYING:
            self._hold(packet.raw, packet)
        else:
            self.answerLocally(packet)

    def decode(self, packet):
        """
        Decode a register record beside the relay; failures are counted and
        logged, never raised.
        """
        factory = self.factory
        session = self.session
        if factory.decode is None:
            return None
        inverter = packet.inverter_serial
        try:
            record = factory.decode(packet, session.device_type_codes.get(inverter))
        except CodecError as e:
            session.parse_errors += 1
            self.log.warn("datalogger {serial}: cannot decode {record_name} record: {error}",
                          serial=session.datalogger_serial, record_name=packet.record_name,
                          error=str(e), hex=packet.raw.hex())
            return None
        except Exception:
            session.parse_errors += 1
            self.log.failure("datalogger {serial}: decoder failed on {hex}",
                             serial=session.datalogger_serial, hex=packet.raw.hex())
            return None
        if record is not None:
            session.saw_record(record)
            if factory.on_record is not None:
                try:
                    factory.on_record(packet, record)
                except Exception:
                    self.log.failure("record delivery failed")
        return record

    def garbageFromDatalogger(self, garbage):
        self.session.parse_errors += 1
        self.session.garbage_bytes += len(garbage.data)
        self.session.saw_garbage(garbage)
        self.log.warn("datalogger {serial} from {peer}: {count} bytes are not a packet "
                      "({reason}); relayed unchanged",
                      serial=self.session.datalogger_serial, peer=self.session.peer,
                      count=len(garbage.data), reason=garbage.reason,
                      hex=garbage.data[:64].hex())
        self.sendUpstream(garbage.data)

    def sendUpstream(self, data):
        upstream = self.upstream
        if upstream is not None:
            upstream.transport.write(data)
        elif self.session.mode == RELAYING:
            self._hold(data, None)

    def _hold(self, data, packet):
        """
        Keep bytes (and the packet they are) until the upstream is up.
        """
        self._pending.append((data, packet))
        self._pending_size += len(data)
        if self._pending_size > self.factory.pending_limit:
            # Stop reading until the upstream is up; the kernel holds the rest.
            self.transport.pauseProducing()

    def _remember(self, packet):
        unanswered = self._unanswered
        unanswered[(packet.record_type, packet.sequence)] = packet
        if len(unanswered) > _UNANSWERED_LIMIT:
            del unanswered[next(iter(unanswered))]

    def answerLocally(self, packet):
        """
        Answer C{packet} as the Growatt server would: echo a ping, ack
        everything else except replies to commands (never acked).  In
        cloud-free mode (or when configured) set the datalogger's clock
        after its announce.
        """
        kind = packet.record_type
        if kind in COMMANDS:
            return
        session = self.session
        session.send(packet.raw if kind == RecordType.PING else build_ack(packet))
        session.local_acks += 1
        if kind == RecordType.ANNOUNCE and self.factory.wants_clock_set(session.mode):
            self.setClock(packet)

    def setClock(self, packet):
        factory = self.factory
        now = datetime.datetime.fromtimestamp(factory.clock.seconds(), factory.timezone)
        text = now.strftime("%Y-%m-%d %H:%M:%S")
        try:
            data = build(ConfigSetRequest(CLOCK_REGISTER, text.encode("ascii")),
                         self.session.datalogger_serial or packet.payload[:10],
                         protocol=packet.protocol, sequence=1)
        except CodecError as e:
            self.log.warn("cannot set the clock of {serial}: {error}",
                          serial=self.session.datalogger_serial, error=str(e))
            return
        self.session.send(data)
        self.log.info("datalogger {serial}: clock set to {clock_time}",
                      serial=self.session.datalogger_serial, clock_time=text)

    def identified(self):
        """
        The datalogger serial is now known: claim it, replacing an older
        connection of the same datalogger.
        """
        session = self.session
        old = self.factory.registry.claim(session)
        self.log.debug("datalogger {serial} identified on connection from {peer}",
                      serial=session.datalogger_serial, peer=session.peer)
        if old is not None:
            self.log.info("datalogger {serial} reconnected from {peer}; closing its "
                          "older connection from {old_peer}",
                          serial=session.datalogger_serial, peer=session.peer,
                          old_peer=old.peer)
            if old.disconnect is not None:
                old.disconnect("replaced by a newer connection")

    # -- server -> datalogger ---------------------------------------------

    def upstreamConnected(self, upstream):
        self._connecting = None
        if self._closing:
            upstream.transport.loseConnection()
            return
        session = self.session
        self.upstream = upstream
        self._down = Framer()
        session.upstream_state = CONNECTED
        if session.mode == LOCAL:
            # Back to relaying, at a packet boundary: everything the
            # datalogger sent so far was answered locally.
            self.log.info("datalogger {serial}: upstream {upstream} is back after "
                          "{tries} retries; relaying again",
                          serial=session.datalogger_serial, tries=self._retries,
                          upstream=self.factory.upstream_label)
            session.mode = RELAYING
        self._retries = 0
        pending, self._pending, self._pending_size = self._pending, [], 0
        for data, packet in pending:
            if packet is not None and self.factory.fallback_local \
                    and packet.record_type not in COMMANDS:
                self._remember(packet)
        if pending:
            upstream.transport.writeSequence([data for data, packet in pending])
        upstream.transport.registerProducer(_Throttle(self.transport), True)
        self.transport.registerProducer(upstream.transport, True)
        self.transport.resumeProducing()
        self.log.debug("datalogger from {peer}: upstream {upstream} connected",
                       peer=session.peer, upstream=self.factory.upstream_label)

    def upstreamFailed(self, reason):
        self._connecting = None
        if self._closing:
            return
        session = self.session
        session.upstream_state = FAILED
        factory = self.factory
        if not factory.fallback_local:
            self.log.error("datalogger {serial} from {peer}: upstream {upstream} unreachable: "
                           "{cause}; closing the datalogger connection",
                           serial=session.datalogger_serial, peer=session.peer,
                           upstream=factory.upstream_label, cause=_why(reason))
            self.disconnect(f"upstream {factory.upstream_label} unreachable")
            return
        if session.mode == RELAYING:
            self.log.warn("datalogger {serial} from {peer}: upstream {upstream} unreachable: "
                          "{cause}; answering the datalogger locally and retrying",
                          serial=session.datalogger_serial, peer=session.peer,
                          upstream=factory.upstream_label, cause=_why(reason))
            self.goLocal()
        else:
            self.log.debug("datalogger {serial}: upstream retry {tries} failed: {cause}",
                           serial=session.datalogger_serial, tries=self._retries,
                           cause=_why(reason))
        self._scheduleRetry()

    def goLocal(self):
        """
        Answer the datalogger ourselves from now on, starting with whatever
        it sent that nobody answered.
        """
        session = self.session
        session.mode = LOCAL
        pending, self._pending, self._pending_size = self._pending, [], 0
        unanswered, self._unanswered = self._unanswered, {}
        for packet in unanswered.values():
            self.answerLocally(packet)
        for data, packet in pending:
            if packet is not None:
                self.answerLocally(packet)
        self.transport.resumeProducing()

    def _scheduleRetry(self):
        factory = self.factory
        delay = min(factory.retry_initial * 2 ** self._retries, factory.retry_max)
        self._retries += 1
        self.session.upstream_state = CONNECTING
        self._retry = factory.clock.callLater(delay, self._reconnect)

    def _reconnect(self):
        self._retry = None
        if not self._closing:
            self._connecting = self.factory.connect_upstream(self)

    def fromUpstream(self, data):
        session = self.session
        unanswered = self._unanswered
        for item in self._down.feed(data):
            if item.__class__ is Garbage:
                session.bytes_out += len(item.data)
                self.transport.write(item.data)
                continue
            if unanswered:
                unanswered.pop((item.record_type, item.sequence), None)
            if logs.trace_packets:
                self.trace(TO_DATALOGGER, item, None)
            if item.record_type in COMMANDS and self.cloudCommandDropped(item):
                continue
            session.packets_out += 1
            session.bytes_out += len(item.raw)
            session.saw_server_packet(item)
            self.transport.write(item.raw)

    def cloudCommandDropped(self, packet):
        """
        Apply the cloud command policy; True when C{packet} is dropped.
        """
        policy = self.factory.policy
        redirect = policy.redirects(packet)
        reason = policy.judge(packet)
        if reason is None:
            if redirect:
                self.log.warn("datalogger {serial}: the cloud changes the server address: "
                              "{command} (let through: proxy.protect_server_address is off)",
                              serial=self.session.datalogger_serial, command=describe(packet))
            return False
        self.session.commands_dropped += 1
        log = self.log.warn if redirect else self.log.info
        log("datalogger {serial}: dropped a cloud command, {command}, because {reason}",
            serial=self.session.datalogger_serial, command=describe(packet), reason=reason)
        return True

    def sendToDatalogger(self, data):
        """
        Send bytes grott built itself (a command, a local acknowledgement)
        to the datalogger.  Callers send whole packets only, so they never
        land inside a relayed packet: relaying is packet by packet too.
        """
        if self._closing:
            return False
        self.transport.write(data)
        return True

    def upstreamLost(self, reason):
        self.upstream = None
        self.session.upstream_state = CLOSED
        rest = self._down.flush()
        if self._closing:
            if rest:
                self.transport.write(rest)
            return
        if not self.factory.fallback_local:
            if rest:
                self.transport.write(rest)
            self._close(f"upstream closed ({_why(reason)})")
            return
        if rest:
            # Half a packet from the cloud would garble what we answer next.
            self.log.warn("datalogger {serial}: upstream closed in the middle of a packet; "
                          "dropped its first {count} bytes",
                          serial=self.session.datalogger_serial, count=len(rest))
        self.log.warn("datalogger {serial}: upstream {upstream} closed ({cause}); answering "
                      "the datalogger locally and retrying",
                      serial=self.session.datalogger_serial,
                      upstream=self.factory.upstream_label, cause=_why(reason))
        self.transport.unregisterProducer()
        self.goLocal()
        self._scheduleRetry()

    # -- closing ------------------------------------------------------------

    def timeoutConnection(self):
        self.disconnect(f"idle for {self.factory.idle_timeout:g} s")

    def disconnect(self, why):
        """
        Close both sides (what was received is flushed first).
        """
        if not self._closing:
            self._close(why)

    def _close(self, why):
        self._closing = True
        if self.session.closed_by is None:
            self.session.closed_by = why
        self._cancelRetry()
        if self._connecting is not None:
            self._connecting.cancel()
        self.transport.loseConnection()
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def _cancelRetry(self):
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def connectionLost(self, reason):
        self.setTimeout(None)
        session = self.session
        if session is None:
            return
        self._closing = True
        self._cancelRetry()
        if session.closed_by is None:
            session.closed_by = "datalogger closed the connection"
        rest = self._up.flush()
        if self.upstream is not None:
            if rest:
                self.upstream.transport.write(rest)
            self.upstream.transport.loseConnection()
        elif self._connecting is not None:
            self._connecting.cancel()
        factory = self.factory
        factory.registry.remove(session)
        factory.connections.discard(self)
        now = factory.clock.seconds()
        self.log.info(
            "datalogger {serial} from {peer} disconnected ({closed_by}) after {age:.0f} s: "
            "{packets_in} packets / {bytes_in} bytes in, {packets_out} packets / "
            "{bytes_out} bytes out",
            serial=session.datalogger_serial, peer=session.peer, closed_by=session.closed_by,
            age=now - session.connected_since, packets_in=session.packets_in,
            bytes_in=session.bytes_in, packets_out=session.packets_out,
            bytes_out=session.bytes_out, inverters=list(session.inverters.values()))
        if session.datalogger_serial is not None:
            logs.packets.debug("session of {serial} closed", serial=session.datalogger_serial,
                              session_closed=True)
        if factory.commands is not None:
            factory.commands.sessionClosed(session)
        self.closed.callback(None)

    # -- tracing -----------------------------------------------------------

    def trace(self, direction, packet, record):
        logs.packets.debug(
            "{serial} {direction} {record_name} {hex}",
            serial=self.session.datalogger_serial, direction=direction,
            record_type=int(packet.record_type), record_name=packet.record_name,
            hex=packet.raw.hex(), record=record.as_dict() if record is not None else None)


def _why(reason):
    value = getattr(reason, "value", reason)
    text = str(value) or value.__class__.__name__
    return text.strip().rstrip(".")


class ProxyFactory(ServerFactory):
    """
    Accepts dataloggers and holds what their protocols share.

    @ivar decode: C{decode(packet, device_type_code) -> record or None}.
    @ivar on_record: C{on_record(packet, record)}, called for every record.
    @ivar commands: the command socket's hook (L{CommandHook}), or None.
    @ivar upstream: the client endpoint of the Growatt server, or None for
        cloud-free mode.
    """

    protocol = DataloggerProtocol
    log = Logger()
    noisy = False

    retry_initial = 1.0

    def __init__(self, upstream, registry, clock, *, upstream_label=None, connect_timeout=10.0,
                 idle_timeout=600.0, max_dataloggers=None, pending_limit=65536, decode=None,
                 on_record=None, commands=None, fallback="close", retry_max=30.0,
                 policy=None, set_time="auto", timezone=None):
        self.upstream = upstream
        self.fallback_local = fallback == "local"
        self.retry_max = retry_max
        self.policy = policy if policy is not None else CloudCommandPolicy()
        self.set_time = set_time
        self.timezone = timezone
        self.upstream_label = upstream_label or str(upstream)
        self.registry = registry
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_dataloggers = max_dataloggers
        self.pending_limit = pending_limit
        self.decode = decode
        self.on_record = on_record
        self.commands = commands
        self.connections = set()

    def wants_clock_set(self, mode):
        if self.set_time == "auto":
            return mode == CLOUD_FREE
        return bool(self.set_time)

    def buildProtocol(self, addr):
        limit = self.max_dataloggers
        if limit is not None and len(self.registry) >= limit:
            self.registry.rejected += 1
            self.log.error("refusing datalogger from {peer}: {count} dataloggers connected, "
                           "the maximum (proxy.max_dataloggers)",
                           peer=getattr(addr, "host", addr), count=len(self.registry))
            return None
        protocol = ServerFactory.buildProtocol(self, addr)
        self.connections.add(protocol)
        return protocol

    def connect_upstream(self, datalogger):
        """
        Open the upstream connection for C{datalogger}; return the pending
        Deferred (cancel it to give up).
        """
        d = self.upstream.connect(UpstreamFactory(datalogger))
        d.addTimeout(self.connect_timeout, self.clock)
        d.addCallbacks(datalogger.upstreamConnected, datalogger.upstreamFailed)
        d.addBoth(lambda result: None)
        return d

    def closeAll(self, why):
        """
        Close every datalogger connection; the Deferred fires when all are gone.
        """
        waiting = []
        for protocol in list(self.connections):
            if protocol.session is None or protocol.closed.called:
                continue
            waiting.append(protocol.closed)
            protocol.disconnect(why)
        return defer.DeferredList(waiting)


class CommandHook:
    """
    What the proxy asks of the command socket (see L{grott.commands}).
    """

    def consume(self, session, packet):
        """Return True when C{packet} answers a grott command (not forwarded)."""
        return False

    def sessionClosed(self, session):
        """Fail the commands still waiting on C{session}."""
