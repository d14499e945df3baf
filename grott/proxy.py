"""
The relay's I/O: one datalogger connection in, one upstream connection out.

A datalogger's bytes enter at L{DataloggerProtocol.dataReceived} and are
framed there; each packet goes on in L{DataloggerProtocol.packetFromDatalogger}
(upstream, held, or answered locally: the connection's L{RelayMachine}
decides) and only then is observed beside the relay (session, decoder,
record sink, trace).  The cloud's bytes enter at
L{grott.upstream.UpstreamProtocol.dataReceived} and leave through
L{DataloggerProtocol.fromUpstream}.

What is forwarded is always the original bytes, packet by packet (or
garbage run by garbage run), never a re-encoding; a decoding failure is
logged and counted, never fatal.  Only two things are not forwarded: the
datalogger's replies to grott's own commands (L{ICommandHook.consume}) and
cloud commands the policy drops.

States and transitions (relaying, connecting, answering locally, retrying,
cloud-free, closing) live in L{grott.relay}; this module only does what the
machine asks.  Flow control follows L{twisted.protocols.portforward}: each
transport is registered as the streaming producer of the other, so a side
that stops reading stops the other side's reads, and memory per connection
stays at one kernel buffer plus at most one packet in each framer.
"""

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, ServerFactory
from zope.interface import implementer

from grott.admission import Admission
from grott.codec import (
    COMMANDS,
    FROM_DATALOGGER,
    TO_DATALOGGER,
    CodecError,
    Framer,
    Garbage,
    RecordType,
)
from grott.interfaces import ICommandHook, IDataloggerLink, IPacketTrace, IRecordSink
from grott.logs import Logger
from grott.logthrottle import LogThrottle
from grott.policy import CloudCommandPolicy
from grott.registers import DECODED_RECORDS
from grott.relay import (
    CLOSING,
    CLOUD_FREE,
    LOCAL,
    RELAYING,
    IRelayDriver,
    RelayMachine,
    RelaySettings,
)
from grott.session import Session
from grott.upstream import UpstreamFactory, UpstreamProtocol

#: Full warning lines per kind and connection per minute (then a summary).
WARNING_BURST = 5

#: Bytes of grott's own answers a datalogger may leave unread after grott
#: stopped reading from it; past this it is closed.  Reading stops as soon
#: as the transport's buffer is full, so only answers to what was already
#: read (and admin commands) can add to this.
UNREAD_LIMIT = 256 * 1024

__all__ = [
    "CLOUD_FREE",
    "LOCAL",
    "RELAYING",
    "CommandHook",
    "DataloggerProtocol",
    "PacketTrace",
    "ProxyFactory",
    "UpstreamProtocol",
]


def _peer(transport):
    """The peer as logs show it, and its host (None for a unix socket)."""
    address = transport.getPeer()
    host = getattr(address, "host", None)
    if host is None:
        return str(getattr(address, "name", None) or address), None
    return f"{host}:{address.port}", host


def _why(reason):
    value = getattr(reason, "value", reason)
    text = str(value) or value.__class__.__name__
    return text.strip().rstrip(".")


@implementer(IDataloggerLink, IRelayDriver, IPushProducer)
class DataloggerProtocol(Protocol):
    """
    A datalogger's connection to grott: frames its bytes, hands them on as
    its L{RelayMachine} says, and does the machine's I/O.
    """

    log = Logger()
    session = None
    relay = None
    upstream = None
    # Set per connection in connectionMade:
    #  _producer: what the datalogger transport's producer is: None,
    #    "upstream" (relaying) or "gate" (answering locally: this protocol);
    #  _unread: bytes grott wrote since the datalogger stopped reading its
    #    answers, or None while it reads;
    #  _throttle: the LogThrottle of this connection's warnings, made on
    #    the first one;
    #  _closed: None, a Deferred (see whenClosed), or True once closed.

    def connectionMade(self):
        factory = self.factory
        peer, host = _peer(self.transport)
        # Every attribute set here, always in this order: instances then
        # share one key layout (no per-connection dict), which matters at
        # thousands of mostly idle connections.
        self.session = Session(peer, factory.clock.seconds(), self, host,
                               factory.registry.totals)
        self.relay = RelayMachine(factory.settings, self.session, self)
        self._up = Framer()
        self._down = Framer()
        self.upstream = None
        self._connecting = None
        self._timer = None
        self._producer = None
        self._unread = None
        self._throttle = None
        self._closed = None
        factory.registry.add(self.session)
        self.log.info("datalogger connected from {peer}", peer=self.session.peer)
        self.relay.start()

    # -- datalogger -> server ---------------------------------------------

    def dataReceived(self, data):
        self.session.bytes_in += len(data)
        for item in self._up.feed(data):
            if item.__class__ is Garbage:
                self.garbageFromDatalogger(item)
            else:
                self.packetFromDatalogger(item)

    def packetFromDatalogger(self, packet):
        # Idle means no complete packet (session.last_packet_at, set below,
        # is what the factory's idle sweep reads): bytes trickling in keep
        # nothing open.
        factory = self.factory
        session = self.session
        if session.saw_datalogger_packet(packet, factory.clock.seconds()):
            refused = factory.admission.claim(session)
            if refused is not None:
                self.disconnect(refused)
                return
        commands = factory.commands
        if commands is not None and commands.consume(session, packet):
            if factory.trace is not None:
                factory.trace.packet(session, FROM_DATALOGGER, packet, None)
            return
        if self.relay.fromDatalogger(packet):
            self.upstream.transport.write(packet.raw)
        # Beside the relay, once the bytes are on their way.
        record = None
        if packet.record_type in DECODED_RECORDS and factory.wantsRecord(packet):
            record = factory.decodeBeside(session, packet, self.admit)
        if factory.trace is not None:
            factory.trace.packet(session, FROM_DATALOGGER, packet, record)

    def garbageFromDatalogger(self, garbage):
        session = self.session
        session.parse_errors += 1
        session.garbage_bytes += len(garbage.data)
        session.saw_garbage(garbage)
        if self.relay.garbageFromDatalogger(garbage.data):
            self.upstream.transport.write(garbage.data)
        if self.admit("runs of bytes that are not a packet"):
            self.log.warn("datalogger {who} from {peer}: {count} bytes are not a packet "
                          "({reason}); relayed unchanged",
                          who=session.name, serial=session.datalogger_serial,
                          peer=session.peer, count=len(garbage.data), reason=garbage.reason,
                          hex=garbage.data[:64].hex())

    def admit(self, what):
        """
        Whether to log this connection's warning about C{what} in full: the
        first few per minute are, the rest are summarised, so a peer cannot
        make the log grow faster than its own input.
        """
        throttle = self._throttle
        if throttle is None:
            # Made on the first warning only: most connections never need one.
            throttle = self._throttle = LogThrottle(self.factory.clock, self._summary,
                                                    burst=WARNING_BURST, interval=60.0)
        return throttle.admit(what)

    def _summary(self, what, count, seconds):
        session = self.session
        self.log.warn("datalogger {who} from {peer}: {count} more {what} in {seconds:.0f} s",
                      who=session.name, serial=session.datalogger_serial, peer=session.peer,
                      count=count, what=what, seconds=seconds)

    # -- server -> datalogger ---------------------------------------------

    def fromUpstream(self, data):
        session = self.session
        relay = self.relay
        factory = self.factory
        trace = factory.trace
        policy = factory.policy
        write = self.transport.write
        for item in self._down.feed(data):
            if item.__class__ is Garbage:
                session.bytes_out += len(item.data)
                write(item.data)
                continue
            relay.fromCloud(item)
            if trace is not None:
                trace.packet(session, TO_DATALOGGER, item, None)
            if item.record_type in COMMANDS and policy.drops(item, session):
                continue
            session.packets_out += 1
            session.bytes_out += len(item.raw)
            session.saw_server_packet(item)
            write(item.raw)

    def upstreamConnected(self, upstream):
        self._connecting = None
        self.upstream = upstream
        self._down = Framer()
        if not self.relay.upstreamConnected():
            self.upstream = None
            upstream.transport.loseConnection()

    def upstreamFailed(self, reason):
        self._connecting = None
        self.relay.upstreamFailed(_why(reason))

    def upstreamLost(self, reason):
        self.upstream = None
        rest = self._down.flush()
        if self.relay.upstreamLost(_why(reason), len(rest)) and rest:
            self.transport.write(rest)

    # -- IDataloggerLink ----------------------------------------------------

    def send(self, data):
        """
        Send bytes grott built itself (a command) to the datalogger.
        Callers send whole packets only, so they never land inside a
        relayed packet: relaying is packet by packet too.
        """
        if self.relay.state is CLOSING:
            return False
        self.toDatalogger(data)
        return True

    def disconnect(self, why):
        """Close both sides (what was received is flushed first)."""
        self.relay.close(why)

    # -- IRelayDriver -------------------------------------------------------

    def connectUpstream(self):
        self._connecting = self.factory.connect_upstream(self)

    def cancelConnect(self):
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()

    def startTimer(self, delay):
        self._timer = self.factory.clock.callLater(delay, self.relay.retryDue)

    def cancelTimer(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def startRelaying(self, held):
        upstream = self.upstream
        if held:
            upstream.transport.writeSequence(held)
        upstream.transport.registerProducer(upstream, True)
        self._setProducer("upstream", upstream.transport)
        self.log.debug("datalogger from {peer}: upstream {upstream} connected",
                       peer=self.session.peer, upstream=self.factory.upstream_label)

    def stopRelaying(self):
        self._setProducer(None, None)

    def answerLocally(self):
        self._setProducer("gate", self)

    def _setProducer(self, kind, producer):
        if self._producer is not None:
            self.transport.unregisterProducer()
            if self._unread is not None:
                self._unread = None
                if self.relay.state is not CLOSING:
                    self.transport.resumeProducing()
        self._producer = kind
        if producer is not None:
            self.transport.registerProducer(producer, True)

    def toDatalogger(self, data):
        unread = self._unread
        if unread is not None:
            unread += len(data)
            self._unread = unread
            if unread > UNREAD_LIMIT:
                self.log.warn("datalogger {who} from {peer} does not read grott's answers "
                              "({count} bytes unread); closing it",
                              who=self.session.name, serial=self.session.datalogger_serial,
                              peer=self.session.peer, count=unread)
                self.disconnect(f"not reading grott's answers ({unread} bytes unread)")
                # A peer that does not read would hold a graceful close
                # (which waits for the unread bytes) open for ever.
                self.transport.abortConnection()
                return
        self.transport.write(data)

    # IPushProducer of its own transport while answering locally: C{pause}
    # means grott's answers are not being read.

    def pauseProducing(self):
        self.answersBlocked()

    def resumeProducing(self):
        self.answersFlowing()

    def stopProducing(self):
        pass

    def answersBlocked(self):
        """grott's answers are not being read: stop reading what asks for more."""
        if self._unread is None:
            self._unread = 0
            self.transport.pauseProducing()

    def answersFlowing(self):
        if self._unread is not None:
            self._unread = None
            if self.relay.state is not CLOSING:
                self.transport.resumeProducing()

    def pauseReading(self):
        self.transport.pauseProducing()

    def resumeReading(self):
        if self._unread is None:
            self.transport.resumeProducing()

    def closeBoth(self):
        self.transport.loseConnection()
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    # -- closing ------------------------------------------------------------

    def timeoutConnection(self):
        self.disconnect(f"idle for {self.factory.idle_timeout:g} s")

    def connectionLost(self, reason):
        session = self.session
        if session is None:
            return
        self.relay.dataloggerLost()
        if self._throttle is not None:
            self._throttle.stop()
        rest = self._up.flush()
        if self.upstream is not None:
            if rest:
                self.upstream.transport.write(rest)
            self.upstream.transport.loseConnection()
        factory = self.factory
        factory.registry.remove(session)
        factory.forget(self)
        now = factory.clock.seconds()
        self.log.info(
            "datalogger {who} from {peer} disconnected ({closed_by}) after {age:.0f} s: "
            "{packets_in} packets / {bytes_in} bytes in, {packets_out} packets / "
            "{bytes_out} bytes out, {local_acks} packets / {local_bytes} bytes answered "
            "by grott",
            who=session.name, serial=session.datalogger_serial, peer=session.peer,
            closed_by=session.closed_by, age=now - session.connected_since,
            packets_in=session.packets_in, bytes_in=session.bytes_in,
            packets_out=session.packets_out, bytes_out=session.bytes_out,
            local_acks=session.local_acks, local_bytes=session.local_bytes,
            inverters=list(session.inverters.values()))
        if factory.trace is not None and session.datalogger_serial is not None:
            factory.trace.sessionClosed(session)
        if factory.commands is not None:
            factory.commands.sessionClosed(session)
        session.link = None
        if self._closed is not None:
            self._closed.callback(None)
        self._closed = True

    def whenClosed(self):
        """A Deferred that fires once this connection is gone."""
        if self._closed is True:
            return defer.succeed(None)
        if self._closed is None:
            self._closed = defer.Deferred()
        return self._closed


@implementer(IPacketTrace)
class PacketTrace:
    """
    Packet tracing into a logger (grott's C{grott.packets} namespace, which
    the per-datalogger log files and the debug level read).
    """

    def __init__(self, log):
        self.log = log

    def packet(self, session, direction, packet, record):
        self.log.debug(
            "{serial} {direction} {record_name} {hex}",
            serial=session.datalogger_serial, direction=direction,
            record_type=int(packet.record_type), record_name=packet.record_name,
            hex=packet.raw.hex(), record=record.as_dict() if record is not None else None)

    def sessionClosed(self, session):
        self.log.debug("session of {serial} closed", serial=session.datalogger_serial,
                       session_closed=True)


class ProxiedDataloggerProtocol(DataloggerProtocol):
    """
    A datalogger connection behind HAProxy (C{proxy.listen: haproxy:...}).

    Twisted's PROXY-protocol wrapper connects this protocol before it has
    read the header, so at C{connectionMade} the peer is still HAProxy.  The
    wrapper hands on only the bytes after the header, so the session starts
    with the first of them: its peer, C{proxy.allowed_networks} and the
    same-address takeover rule then see the datalogger's own address, and a
    connection that never sends a header (a port scan, a stray health check)
    never opens an upstream connection.
    """

    _header_wait = None

    def connectionMade(self):
        factory = self.factory
        self._header_wait = factory.clock.callLater(factory.idle_timeout, self._noHeader)

    def dataReceived(self, data):
        if self.session is None:
            self._cancelHeaderWait()
            if not self.factory.admission.networkAllowed(self.transport.getPeer()):
                self.transport.loseConnection()
                return
            DataloggerProtocol.connectionMade(self)
        DataloggerProtocol.dataReceived(self, data)

    def _noHeader(self):
        self._header_wait = None
        self.log.info("connection from {peer} sent no datalogger bytes in {seconds:g} s "
                      "(behind HAProxy); closing it", peer=str(self.transport.getPeer()),
                      seconds=self.factory.idle_timeout)
        self.transport.loseConnection()

    def _cancelHeaderWait(self):
        if self._header_wait is not None and self._header_wait.active():
            self._header_wait.cancel()
        self._header_wait = None

    def connectionLost(self, reason):
        if self.session is None:
            self._cancelHeaderWait()
            self.factory.forget(self)
            return
        DataloggerProtocol.connectionLost(self, reason)


@implementer(IRecordSink)
class _CallableSink:
    """A plain C{on_record(packet, record)} callable as a record sink."""

    def __init__(self, on_record):
        self.on_record = on_record

    def wantsRecords(self):
        return True

    def deliver(self, packet, record):
        self.on_record(packet, record)


class ProxyFactory(ServerFactory):
    """
    Accepts dataloggers and holds what their protocols share.

    @ivar decode: C{decode(packet, device_type_code) -> record or None}, or
        None to decode nothing.
    @ivar sink: the L{IRecordSink} for decoded records, or None.
    @ivar commands: the command socket's L{ICommandHook}, or None.
    @ivar trace: the L{IPacketTrace} packets are traced to, or None (off).
    @ivar upstream: the client endpoint of the Growatt server, or None for
        cloud-free mode.
    @ivar settings: the L{RelaySettings} every connection's machine reads.
    @ivar admission: the L{Admission} rules (allowed networks and serials,
        takeovers).
    """

    protocol = DataloggerProtocol
    log = Logger()
    noisy = False

    def __init__(self, upstream, registry, clock, *, upstream_label=None, connect_timeout=10.0,
                 idle_timeout=600.0, max_dataloggers=None, pending_limit=65536, decode=None,
                 on_record=None, sink=None, commands=None, fallback="close", retry_max=30.0,
                 policy=None, set_time="auto", timezone=None, trace=None,
                 allowed_serials=None, allowed_networks=None, proxied=False):
        self.upstream = upstream
        #: Behind HAProxy's PROXY protocol (proxy.listen: haproxy:...).
        self.proxied = proxied
        if proxied:
            self.protocol = ProxiedDataloggerProtocol
        self.policy = policy if policy is not None else CloudCommandPolicy()
        self.registry = registry
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_dataloggers = max_dataloggers
        self.decode = decode
        if sink is None and on_record is not None:
            sink = _CallableSink(on_record)
        self.sink = sink
        self.commands = commands
        self.trace = trace
        self.admission = Admission(registry, clock, allowed_serials, allowed_networks)
        self._sweep = None
        self.connections = set()
        self.settings = RelaySettings(
            cloud=upstream is not None, fallback_local=fallback == "local", clock=clock,
            upstream_label=upstream_label or str(upstream), retry_max=retry_max,
            pending_limit=pending_limit, set_time=set_time, timezone=timezone)

    def _setting(name, doc):
        return property(lambda self: getattr(self.settings, name),
                        lambda self, value: setattr(self.settings, name, value), doc=doc)

    fallback_local = _setting("fallback_local", "Answer locally when the cloud is away.")
    retry_initial = _setting("retry_initial", "First retry delay, seconds.")
    retry_max = _setting("retry_max", "Longest retry delay, seconds.")
    upstream_label = _setting("upstream_label", "The upstream as logs name it.")
    pending_limit = _setting("pending_limit", "Bytes held before the upstream is up.")
    del _setting

    def wantsRecord(self, packet):
        """
        Whether to decode a register record: an announce always (it tells
        the device type the next records decode by, and comes once per
        connection), others only when something consumes records.
        """
        if self.decode is None:
            return False
        if packet.record_type == RecordType.ANNOUNCE or self.trace is not None:
            return True
        sink = self.sink
        return sink is not None and sink.wantsRecords()

    def decodeBeside(self, session, packet, admit):
        """
        Decode a register record of C{session} beside the relay and hand it
        to the sink; failures are counted and logged (as far as the
        connection's C{admit(what)} lets warnings through), never raised.
        """
        try:
            record = self.decode(packet, session.device_type_codes.get(packet.inverter_serial))
        except CodecError as e:
            session.parse_errors += 1
            if admit("records it cannot decode"):
                self.log.warn("datalogger {who}: cannot decode {record_name} record: {error}",
                              who=session.name, serial=session.datalogger_serial,
                              record_name=packet.record_name, error=str(e),
                              hex=packet.raw.hex())
            return None
        except Exception:
            session.parse_errors += 1
            self.log.failure("datalogger {who}: decoder failed on {hex}", who=session.name,
                             serial=session.datalogger_serial, hex=packet.raw.hex())
            return None
        if record is not None:
            session.saw_record(record)
            if self.sink is not None:
                try:
                    self.sink.deliver(packet, record)
                except Exception:
                    self.log.failure("record delivery failed")
        return record

    def startFactory(self):
        if self.upstream is None:
            self.log.info("no upstream (proxy.upstream: none): grott answers every "
                          "datalogger itself (cloud-free)")
        else:
            self.log.info("relaying dataloggers to {upstream}", upstream=self.upstream_label)

    def buildProtocol(self, addr):
        # Behind HAProxy, addr is HAProxy's: the datalogger's own address is
        # checked once the PROXY header told it (ProxiedDataloggerProtocol).
        if not self.proxied and not self.admission.networkAllowed(addr):
            return None
        limit = self.max_dataloggers
        if limit is not None and len(self.registry) >= limit:
            self.registry.rejected += 1
            self.log.error("refusing datalogger from {peer}: {count} dataloggers connected, "
                           "the maximum (proxy.max_dataloggers)",
                           peer=getattr(addr, "host", addr), count=len(self.registry))
            return None
        protocol = ServerFactory.buildProtocol(self, addr)
        self.connections.add(protocol)
        if self._sweep is None:
            self._sweep = self.clock.callLater(self._sweepInterval(), self._sweepIdle)
        return protocol

    # One timer for every connection's idle timeout, instead of one per
    # connection: thousands of mostly idle dataloggers then cost one
    # DelayedCall (and a scan of them per tick), not thousands.

    def _sweepInterval(self):
        return min(1.0, self.idle_timeout / 10)

    def _sweepIdle(self):
        self._sweep = None
        now = self.clock.seconds()
        idle = self.idle_timeout
        for protocol in list(self.connections):
            session = protocol.session
            if session is None:
                continue
            last = session.last_packet_at
            if now - (session.connected_since if last is None else last) >= idle:
                protocol.timeoutConnection()
        if self.connections:
            self._sweep = self.clock.callLater(self._sweepInterval(), self._sweepIdle)

    def forget(self, protocol):
        """C{protocol}'s connection is gone; the sweep stops with the last one."""
        self.connections.discard(protocol)
        if not self.connections and self._sweep is not None:
            if self._sweep.active():
                self._sweep.cancel()
            self._sweep = None

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
            if protocol.session is None:
                # Behind HAProxy, still waiting for its first bytes.
                if protocol.transport is not None:
                    protocol.transport.loseConnection()
                continue
            if protocol._closed is True:
                continue
            waiting.append(protocol.whenClosed())
            protocol.disconnect(why)
        return defer.DeferredList(waiting)


@implementer(ICommandHook)
class CommandHook:
    """
    A command hook that claims nothing (the relay without a command socket).
    """

    def consume(self, session, packet):
        return False

    def sessionClosed(self, session):
        pass
