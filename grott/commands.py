"""
The command socket: read and write inverter and datalogger registers
through the datalogger's own connection, from telnet or a script.

Two halves:

 - L{CommandDispatcher} is the proxy's L{grott.interfaces.ICommandHook}.  It owns
   every piece of command state: per datalogger a queue (one command on the
   wire at a time, because replies are matched by record type + register and
   two of grott's own commands for the same register could not be told
   apart), grott's own sequence numbers, the timeout of the command in
   flight and a short memory of replies that are still expected after a
   timeout, so a late reply is swallowed too and the cloud never sees an
   answer to a question it did not ask (protocol.md 8.7, 14.6).
 - L{CommandProtocol} (built by L{CommandFactory}) only parses lines and
   formats answers.  It handles one line at a time per client and pauses
   reading while a command waits, so answers come back in the order of the
   questions; every answer ends with an empty line.

Replies are matched on record type + register(s) + datalogger serial.  grott
numbers its commands from 0x8000 up; once a datalogger has echoed one of
those numbers in a reply, replies carrying another number (the cloud's
sequence 1) are no longer taken for grott's, which keeps a cloud read of the
same register apart from grott's.
"""

import collections
import functools
import hmac
import ipaddress

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from grott import settings as catalogue
from grott.codec import (
    FROM_DATALOGGER,
    ConfigGetRequest,
    ConfigSetRequest,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteMultiReply,
    InverterWriteMultiRequest,
    InverterWriteRequest,
    PacketError,
    RecordType,
    build,
    parse_body,
)
from grott.counters import COMMAND_BUCKETS, Histogram
from grott.interfaces import ICommandHook
from grott.logs import Logger

__all__ = [
    "CommandDispatcher",
    "CommandError",
    "CommandFactory",
    "CommandProtocol",
    "CommandTimeout",
    "DataloggerGone",
    "NotConnected",
    "is_loopback",
]

#: grott's first sequence number; the cloud uses 1 and dataloggers count
#: per record type from 1, so the upper half is grott's alone in practice.
FIRST_SEQUENCE = 0x8000
#: The most registers one read may ask for (a Modbus read of holding registers).
MAX_READ = 125
#: The most registers one multiple write (0x10) may carry (Modbus: 123).
MAX_WRITE = 123
#: The longest datalogger configuration value grott sends.
MAX_CONFIG_TEXT = 255
#: Commands waiting per datalogger behind the one in flight.
QUEUE_LIMIT = 64
#: Late replies remembered per datalogger, and for how long (seconds).
LATE_LIMIT = 16
LATE_FOR = 300.0
#: Admin clients connected at once.
MAX_CLIENTS = 32
#: Seconds without a line before an admin client is closed (command.idle_timeout).
IDLE_TIMEOUT = 300.0
#: Lines an admin client may send at once, then per second (command.rate_limit).
RATE_LIMIT = 20.0
#: Bytes of answers a client that stopped reading may leave unread before it
#: is closed; reading stops long before (at the transport's 64 KiB buffer).
MAX_UNREAD = 1 << 20
#: Configuration registers that re-point the datalogger to another server.
REDIRECTING_CONFIG = frozenset({17, 18, 19})

_REPLY_TYPES = frozenset({RecordType.INVERTER_READ, RecordType.INVERTER_WRITE,
                          RecordType.INVERTER_WRITE_MULTI,
                          RecordType.CONFIG_GET, RecordType.CONFIG_SET})


class CommandError(Exception):
    """
    A command could not be carried out; the text is what follows C{ERROR}.
    """


class NotConnected(CommandError):
    """No datalogger with that serial is connected."""


class CommandTimeout(CommandError):
    """The datalogger did not answer in time."""


class DataloggerGone(CommandError):
    """The datalogger disconnected before it answered."""


class CommandRefused(CommandError):
    """The datalogger or inverter answered with a failure."""


def _u16(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise CommandError(f"{what} {value!r} is out of range (0..65535)")
    return value


def _reply_key(message):
    """
    What a reply is matched on, besides the datalogger (protocol.md 8.7).
    """
    if isinstance(message, (InverterReadRequest, InverterReadReply)):
        return (RecordType.INVERTER_READ, message.first, message.last)
    if isinstance(message, (InverterWriteMultiRequest, InverterWriteMultiReply)):
        return (RecordType.INVERTER_WRITE_MULTI, message.first, message.last)
    if isinstance(message, ConfigGetRequest):
        # grott asks for one register: one reply (0x19 answers per register).
        return (RecordType.CONFIG_GET, message.first)
    return (message.record_type, message.register)


class _Job:
    """
    One command from one client: its request, how to turn the reply into a
    result, and the client's own Deferred.
    """

    def __init__(self, message, device_address, finish, describe):
        self.message = message
        self.key = _reply_key(message)
        self.device_address = device_address
        self.finish = finish
        self.describe = describe
        self.deferred = defer.Deferred()

    def succeed(self, result):
        if not self.deferred.called:
            self.deferred.callback(result)

    def fail(self, error):
        if not self.deferred.called:
            self.deferred.errback(error)


class _InFlight:
    def __init__(self, job, sequence):
        self.job = job
        self.sequence = sequence
        self.waiting = defer.Deferred()


class _SessionCommands:
    """
    The command state of one datalogger connection.

    @ivar echoes: True once the datalogger answered a grott command with
        grott's sequence number; from then on the sequence must match too.
    @ivar late: (key, sequence) -> time until which a reply is still
        expected for a command that timed out.
    """

    def __init__(self, session):
        self.session = session
        self.queue = collections.deque()
        self.current = None
        self.working = False
        self.closed = False
        self.echoes = False
        self.late = collections.OrderedDict()
        self._sequence = FIRST_SEQUENCE - 1

    def next_sequence(self):
        self._sequence = FIRST_SEQUENCE + (self._sequence + 1 - FIRST_SEQUENCE) % 0x8000
        return self._sequence

    def idle(self):
        return not (self.queue or self.current or self.working or self.late)

    def is_ours(self, expected, sequence):
        return sequence == expected or not self.echoes

    def expect_late(self, key, sequence, until, limit):
        self.late[(key, sequence)] = until
        while len(self.late) > limit:
            self.late.popitem(last=False)

    def take_late(self, key, sequence, now):
        for entry, until in list(self.late.items()):
            if until <= now:
                del self.late[entry]
        if (key, sequence) in self.late:
            del self.late[(key, sequence)]
            return True
        if not self.echoes:
            for entry in self.late:
                if entry[0] == key:
                    del self.late[entry]
                    return True
        return False


def _counted(op):
    """
    Count a dispatcher command method's outcome by C{via} (who asked: the
    admin socket, MQTT, ...), C{op} and result, and time it from the call
    to the answer (queueing included: what the asker waits).  The method
    takes a keyword C{via}, C{"admin"} unless given.
    """
    def decorate(method):
        @functools.wraps(method)
        def counted(self, *args, via="admin", **kwargs):
            started = self.clock.seconds()
            try:
                d = method(self, *args, **kwargs)
            except NotConnected:
                self.outcomes[(via, op, "not_connected")] += 1
                raise
            except CommandError:
                self.outcomes[(via, op, "rejected")] += 1
                raise
            return d.addBoth(self._finished, via, op, started)
        return counted
    return decorate


#: Outcome label of a failed command, by exception (first match wins).
_RESULTS = ((CommandTimeout, "timeout"), (DataloggerGone, "gone"),
            (CommandRefused, "refused"), (defer.CancelledError, "cancelled"))


@implementer(ICommandHook)
class CommandDispatcher:
    """
    Sends grott's commands to dataloggers and takes their replies out of
    the relay.

    The four command methods check everything before anything is sent and
    raise L{CommandError} at once for a bad argument or an unknown serial;
    otherwise they return a Deferred of the result that fails with a
    L{CommandError} (timeout, disconnect, refusal).  Each call gets its own
    Deferred; cancelling it drops a queued command (one already sent still
    has its reply swallowed).

    @param registry: the proxy's L{grott.session.Registry}.
    @param clock: an C{IReactorTime} for the timeouts.
    @param timeout: seconds to wait for each reply (C{command.timeout}).
    """

    log = Logger()

    def __init__(self, registry, clock, timeout=10.0, *, late_for=LATE_FOR,
                 late_limit=LATE_LIMIT, queue_limit=QUEUE_LIMIT):
        self.registry = registry
        self.clock = clock
        self.timeout = timeout
        self.late_for = late_for
        self.late_limit = late_limit
        self.queue_limit = queue_limit
        self._states = {}
        #: sessions that echoed grott's sequence numbers (kept while idle)
        self._echoes = set()
        self.counts = collections.Counter()
        #: (via, op, result) -> commands; see L{_counted}
        self.outcomes = collections.Counter()
        #: (via, op) -> L{Histogram} of seconds from asking to the answer
        self.latency = {}

    def _finished(self, result, via, op, started):
        if isinstance(result, Failure):
            outcome = next((name for kind, name in _RESULTS if result.check(kind)), "error")
        else:
            outcome = "ok"
        self.outcomes[(via, op, outcome)] += 1
        histogram = self.latency.get((via, op))
        if histogram is None:
            histogram = self.latency[(via, op)] = Histogram(COMMAND_BUCKETS)
        histogram.observe(self.clock.seconds() - started)
        return result

    # ---------------------------------------------------------------- queries

    def dataloggers(self):
        """
        (datalogger serial, inverter serial or None, protocol) of every
        identified datalogger, in the registry's stable order.
        """
        return [(s.datalogger_serial, s.inverter_serial, s.protocol)
                for s in self.registry.sorted() if s.datalogger_serial is not None]

    def report(self):
        """
        The command socket's part of the stats report, as a dict.
        """
        c = self.counts
        report = {name: c[name] for name in ("sent", "answered", "refused", "timeouts",
                                              "late_replies", "gone")}
        report["in_flight"] = sum(1 for s in self._states.values() if s.current is not None)
        report["queued"] = sum(len(s.queue) for s in self._states.values())
        return report

    def report_lines(self):
        """
        The command socket's part of the stats report.
        """
        r = self.report()
        line = (f"  commands: sent={r['sent']} answered={r['answered']} "
                f"refused={r['refused']} timeouts={r['timeouts']} "
                f"late_replies={r['late_replies']} gone={r['gone']} "
                f"in_flight={r['in_flight']} queued={r['queued']}")
        return [line]

    # ---------------------------------------------------------------- commands

    @_counted("read")
    def read_registers(self, serial, first, count=1):
        """
        Read inverter holding registers C{first}..C{first + count - 1}.

        @return: a Deferred of a list of (register, value).
        """
        _u16(first, "register")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_READ:
            raise CommandError(f"count {count!r} is out of range (1..{MAX_READ})")
        last = first + count - 1
        if last > 0xFFFF:
            raise CommandError(f"registers {first}..{last} go beyond 65535")

        def finish(reply):
            if reply.values is None:
                raise CommandRefused(f"the inverter could not read registers {first}..{last}")
            return list(zip(range(first, last + 1), reply.values))
        return self._submit(serial, InverterReadRequest(first, last), True, finish,
                            f"read {first}..{last}")

    @_counted("set")
    def write_register(self, serial, register, value):
        """
        Write one inverter holding register (0x06).  Whether the register
        may be written is the control plane's question (L{grott.control}).

        @return: a Deferred of (register, the value the inverter reports).
        """
        _u16(register, "register")
        _u16(value, "value")

        def finish(reply):
            if reply.status != 0:
                raise CommandRefused(f"the inverter refused register {register} := {value} "
                                     f"(status {reply.status}, value {reply.value})")
            return (reply.register, reply.value)
        return self._submit(serial, InverterWriteRequest(register, value), True, finish,
                            f"set {register}")

    @_counted("mset")
    def write_registers(self, serial, first, values):
        """
        Write consecutive inverter holding registers from C{first} in one
        command (0x10), so a setting spread over several registers (a time
        slot's start, end and enable) never exists half written.

        @return: a Deferred of (first, last).
        """
        _u16(first, "register")
        values = tuple(values)
        if not 1 <= len(values) <= MAX_WRITE:
            raise CommandError(f"{len(values)} values: a multiple write takes 1..{MAX_WRITE}")
        for value in values:
            _u16(value, "value")
        last = first + len(values) - 1
        if last > 0xFFFF:
            raise CommandError(f"registers {first}..{last} go beyond 65535")

        def finish(reply):
            if reply.status != 0:
                raise CommandRefused(f"the inverter refused registers {first}..{last} "
                                     f"(status {reply.status})")
            return (reply.first, reply.last)
        return self._submit(serial, InverterWriteMultiRequest(first, values), True, finish,
                            f"mset {first}..{last}")

    @_counted("dread")
    def read_config(self, serial, register):
        """
        Read one datalogger configuration register.

        @return: a Deferred of (register, value as text).
        """
        _u16(register, "register")
        return self._submit(serial, ConfigGetRequest(register, register), False,
                            lambda reply: (reply.register, reply.text), f"dread {register}")

    @_counted("dset")
    def write_config(self, serial, register, text):
        """
        Set one datalogger configuration register to C{text}.

        @return: a Deferred of (register, the text written).
        """
        _u16(register, "register")
        if not isinstance(text, str) or not text:
            raise CommandError("the value must not be empty")
        try:
            value = text.encode("latin-1")
        except UnicodeEncodeError:
            raise CommandError(f"value {text!r} is not latin-1 text") from None
        if len(value) > MAX_CONFIG_TEXT:
            raise CommandError(f"value of {len(value)} bytes is longer than {MAX_CONFIG_TEXT}")
        if any(b < 0x20 or b == 0x7F for b in value):
            raise CommandError("the value contains control characters")

        def finish(reply):
            if reply.status != 0:
                raise CommandRefused(f"the datalogger refused register {register} := {text!r} "
                                     f"(status {reply.status})")
            return (register, text)
        if register in REDIRECTING_CONFIG:
            self.log.warn("datalogger {serial}: configuration register {register} := "  # noqa: G010
                          "{value!r} re-points the datalogger to another server",
                          serial=serial, register=register, value=text)
        return self._submit(serial, ConfigSetRequest(register, value), False, finish,
                            f"dset {register}")

    # ---------------------------------------------------------------- queueing

    def find_session(self, serial):
        """
        The session of datalogger C{serial}; L{NotConnected} if there is none.
        """
        return self._find(serial)

    def _find(self, serial):
        session = self.registry.by_serial(serial)
        if session is None and isinstance(serial, str):
            session = self.registry.by_serial(serial.upper())
        if session is None:
            raise NotConnected(f"datalogger {serial} is not connected")
        return session

    def _submit(self, serial, message, to_inverter, finish, describe):
        """
        Queue C{message} for the datalogger C{serial}; start its worker if idle.
        """
        session = self._find(serial)
        state = self._states.get(session.id)
        if state is None:
            state = self._states[session.id] = _SessionCommands(session)
            state.echoes = session.id in self._echoes
        if len(state.queue) >= self.queue_limit:
            raise CommandError(f"{len(state.queue)} commands are already waiting for "
                               f"datalogger {session.datalogger_serial}")
        address = session.inverter_address() if to_inverter else 1
        job = _Job(message, address, finish, describe)
        state.queue.append(job)
        if not state.working:
            state.working = True
            worker = defer.Deferred.fromCoroutine(self._work(state))
            worker.addErrback(lambda f: self.log.failure("command worker failed", f))
        return job.deferred

    async def _work(self, state):
        """
        Send the queued commands of one datalogger, one at a time.
        """
        try:
            while state.queue and not state.closed:
                job = state.queue.popleft()
                if job.deferred.called:
                    # Its client went away while it was queued.
                    continue
                await self._perform(state, job)
        finally:
            state.working = False
            self._forget_if_idle(state)

    async def _perform(self, state, job):
        session = state.session
        serial = session.datalogger_serial
        sequence = state.next_sequence()
        try:
            data = build(job.message, serial, protocol=session.protocol, sequence=sequence,
                         device_address=job.device_address)
        except PacketError as e:
            job.fail(CommandError(f"cannot build the command for {serial}: {e}"))
            return
        flight = state.current = _InFlight(job, sequence)
        if session.send is None or not session.send(data):
            state.current = None
            self.counts["gone"] += 1
            job.fail(DataloggerGone(f"datalogger {serial} is disconnecting"))
            return
        session.commands += 1
        self.counts["sent"] += 1
        self.log.debug("datalogger {serial}: {command} sent (sequence {sequence})",
                       serial=serial, command=job.describe, sequence=sequence)
        flight.waiting.addTimeout(self.timeout, self.clock)
        try:
            reply = await flight.waiting
        except defer.TimeoutError:
            state.current = None
            self.counts["timeouts"] += 1
            state.expect_late(job.key, sequence, self.clock.seconds() + self.late_for,
                              self.late_limit)
            self.log.warn("datalogger {serial}: no reply to {command} within {timeout:g} s",  # noqa: G010
                          serial=serial, command=job.describe, timeout=self.timeout)
            job.fail(CommandTimeout(f"timeout: datalogger {serial} did not answer "
                                    f"{job.describe} within {self.timeout:g} s"))
            return
        except CommandError as e:
            state.current = None
            job.fail(e)
            return
        state.current = None
        try:
            result = job.finish(reply)
        except CommandRefused as e:
            self.counts["refused"] += 1
            job.fail(e)
        else:
            self.counts["answered"] += 1
            job.succeed(result)

    def _forget_if_idle(self, state):
        if state.idle() and self._states.get(state.session.id) is state:
            del self._states[state.session.id]

    # ---------------------------------------------------------------- proxy hook

    def consume(self, session, packet):
        """
        Take C{packet} out of the relay when it answers one of grott's
        commands (in flight or timed out); never raises.
        """
        state = self._states.get(session.id)
        if state is None or packet.record_type not in _REPLY_TYPES:
            return False
        try:
            return self._consume(state, packet)
        except Exception:  # noqa: BLE001 - the relay must never see a matching bug
            self.log.failure("datalogger {serial}: matching a reply failed",
                             serial=session.datalogger_serial)
            return False

    def _consume(self, state, packet):
        session = state.session
        flight = state.current
        try:
            message = parse_body(packet, FROM_DATALOGGER)
        except PacketError as e:
            if (flight is not None and packet.sequence == flight.sequence
                    and packet.record_type == flight.job.message.record_type):
                # Our number and our record type: ours, though unreadable.
                state.current = None
                flight.waiting.errback(CommandError(
                    f"malformed reply from datalogger {session.datalogger_serial}: {e}"))
                return True
            return False
        if packet.datalogger_serial != session.datalogger_serial:
            return False
        key = _reply_key(message)
        if (flight is not None and flight.job.key == key
                and state.is_ours(flight.sequence, packet.sequence)):
            if packet.sequence == flight.sequence and not state.echoes:
                state.echoes = True
                self._echoes.add(session.id)
            state.current = None
            flight.waiting.callback(message)
            return True
        late = state.take_late(key, packet.sequence, self.clock.seconds())
        self._forget_if_idle(state)
        if late:
            self.counts["late_replies"] += 1
            self.log.info("datalogger {serial}: late reply to a timed-out command "
                          "swallowed ({record_name})", serial=session.datalogger_serial,
                          record_name=packet.record_name)
        return late

    def sessionClosed(self, session):
        """
        Fail at once whatever waits on C{session}.
        """
        self._echoes.discard(session.id)
        state = self._states.pop(session.id, None)
        if state is None:
            return
        state.closed = True
        serial = session.datalogger_serial
        queued = list(state.queue)
        state.queue.clear()
        state.late.clear()
        flight, state.current = state.current, None
        if flight is not None:
            self.counts["gone"] += 1
            flight.waiting.errback(DataloggerGone(
                f"datalogger {serial} disconnected before it answered"))
        for job in queued:
            job.fail(DataloggerGone(f"datalogger {serial} disconnected"))


# -------------------------------------------------------------------- the admin socket

HELP = [
    "list                                     connected dataloggers: serial | inverter | protocol",
    "read <datalogger> <register> [<count>]   read inverter holding register(s)",
    "set <datalogger> <register> <value>      write one inverter holding register (0x06)",
    "mset <datalogger> <register> <v1> <v2>.. write consecutive holding registers at once (0x10)",
    ("setting <datalogger> [<name> [<value>]] the datalogger's settings, or read or change one "
     "(the value is the rest of the line)"),
    "dread <datalogger> <register>            read a datalogger configuration register",
    ("dset <datalogger> <register> <value>     set a datalogger configuration register "
     "(the value is the rest of the line)"),
    "stats                                    the session report",
    "help                                     this list, then the named settings",
    "quit                                     close the connection",
]

_USAGE = {
    "read": "read <datalogger serial> <register> [<count>]",
    "set": "set <datalogger serial> <register> <value>",
    "mset": "mset <datalogger serial> <register> <value> [<value> ...]",
    "setting": "setting <datalogger serial> [<name> [<value>]]",
    "dread": "dread <datalogger serial> <register>",
    "dset": "dset <datalogger serial> <register> <value>",
}


def settings_help():
    """
    The named settings per family, as C{help} lists them after the commands.
    """
    lines = [("settings (writes are read back; other registers are refused unless "
              "control.allow_raw_writes):")]
    for family, items in catalogue.SETTINGS.items():
        lines.append(f"  {family}:")
        lines.extend("  " + _setting_line(s) for s in items)
    return lines


def _setting_line(s):
    regs = str(s.register) if s.count == 1 else f"{s.register}-{s.registers[-1]}"
    return f"  {s.name:<27} {regs:<9} {s.describe()}"


def _number(text, what):
    """
    A decimal or 0x-hex whole number; range checks are the dispatcher's.
    """
    try:
        if text[:2].lower() == "0x" and len(text) > 2:
            return int(text, 0)
        if text.isascii() and text.isdigit():
            return int(text)
    except ValueError:
        pass
    raise CommandError(f"{what} {text!r} is not a number")


def _printable(text):
    """
    Configuration text as one safe line: control characters escaped.
    """
    return "".join(c if " " <= c != "\x7f" else f"\\x{ord(c):02x}" for c in text)


class CommandProtocol(LineReceiver, TimeoutMixin):
    """
    One admin client.  Lines end in LF or CRLF; answers end in CRLF and a
    final empty line.  While a command waits, no further line is read.

    Nothing a client does can make grott hold more than a bounded amount
    for it (README "The command socket" lists the bounds):

     - the protocol is its transport's streaming producer, so while the
       client leaves answers unread (the transport's write buffer is full)
       no further line is read: a client that sends and never reads stops
       being read, and its unread lines wait in the kernel, not in grott;
       an answer that would leave more than C{factory.max_unread} bytes
       unread closes it (logged);
     - at most C{factory.burst} lines at once, then C{factory.rate} lines a
       second: beyond that, reading pauses until the budget refills;
     - a client that sends no line for C{factory.idle_timeout} seconds is
       closed, so idle clients cannot hold every slot;
     - with C{factory.token} set, nothing but C{auth TOKEN} is accepted
       first, and a wrong token closes the connection.

    Reading stops for any of several reasons at once (a command waiting,
    answers unread, the rate budget spent) and resumes when none is left.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1024
    log = Logger()
    _pending = None
    _lost = False
    _refill = None

    def connectionMade(self):
        factory = self.factory
        factory.clients.add(self)
        self._holds = set()
        self._budget = float(factory.burst)
        self._budget_at = factory.clock.seconds()
        self._slowed = False
        self.authenticated = factory.token is None
        self.transport.registerProducer(self, True)
        self._producing = True
        self.setTimeout(factory.idle_timeout)
        self.log.debug("command socket: client {peer} connected", peer=self._peer())

    def _peer(self):
        return str(self.transport.getPeer())

    def callLater(self, delay, f, *args):
        # TimeoutMixin's timer, on the factory's clock.
        return self.factory.clock.callLater(delay, f, *args)

    def connectionLost(self, reason):
        self._lost = True
        self.setTimeout(None)
        if self._refill is not None and self._refill.active():
            self._refill.cancel()
        self._refill = None
        self.factory.clients.discard(self)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def timeoutConnection(self):
        self.log.info("command socket: client {peer} sent no command for {seconds:g} s; "
                      "closing it", peer=self._peer(), seconds=self.factory.idle_timeout)
        self.factory.counts["closed_idle"] += 1
        self.close(abort=True)

    def close(self, abort=False):
        """
        End the connection: after the answers written so far, or at once
        (C{abort}) for a client that is not reading them.
        """
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    # ------------------------------------------------------------ flow control

    def _hold(self, reason):
        if not self._holds and not self._lost:
            LineReceiver.pauseProducing(self)
        self._holds.add(reason)

    def _release(self, reason):
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and not self._lost:
            LineReceiver.resumeProducing(self)

    def pauseProducing(self):
        # The transport's write buffer is full: the client is not reading.
        self._hold("unread")

    def resumeProducing(self):
        self._release("unread")

    def _unread(self):
        """
        Bytes of answers written but not yet taken by the client, as far as
        the transport tells (a TCP or UNIX socket does; others count 0).
        """
        t = self.transport
        try:
            return len(t.dataBuffer) - t.offset + t._tempDataLen
        except (AttributeError, TypeError):
            return 0

    def _spend(self):
        """
        Take one line from the rate budget; pause reading once it is spent.
        """
        factory = self.factory
        now = factory.clock.seconds()
        self._budget = min(float(factory.burst),
                           self._budget + (now - self._budget_at) * factory.rate)
        self._budget_at = now
        self._budget -= 1
        if self._budget >= 1 or self._refill is not None:
            return
        if not self._slowed:
            self._slowed = True
            factory.counts["slowed"] += 1
            self.log.info("command socket: client {peer} sends more than {rate:g} commands "
                          "a second; reading it more slowly", peer=self._peer(),
                          rate=factory.rate)
        self._hold("rate")
        self._refill = factory.clock.callLater((1 - self._budget) / factory.rate, self._refilled)

    def _refilled(self):
        self._refill = None
        self._release("rate")

    # ------------------------------------------------------------ lines

    def lineLengthExceeded(self, line):
        self.answer([f"ERROR line longer than {self.MAX_LENGTH} bytes; closing"])
        self.close()

    def lineReceived(self, line):
        if self._lost:
            return
        self.resetTimeout()
        self._spend()
        text = line.rstrip(b"\r").decode("latin-1")
        words = text.split()
        if not words:
            # Scripts read up to the empty line: an empty one gets one too.
            self.answer(["ERROR empty line; try help"])
            return
        name = words[0].lower()
        if name == "auth" or not self.authenticated:
            self._authenticate(name, words)
            return
        handler = getattr(self, "do_" + name, None)
        if handler is None:
            self.answer([f"ERROR unknown command {_printable(words[0])!r}; try help"])
            return
        try:
            result = handler(words[1:], text)
        except CommandError as e:
            self.answer([f"ERROR {e}"])
            return
        except Exception:  # noqa: BLE001 - one client's bad luck must not end the socket
            self.log.failure("command socket: {command} failed", command=name)
            self.answer(["ERROR internal error (see grott's log)"])
            return
        if not isinstance(result, defer.Deferred):
            if result is not None:
                self.answer(result)
            return
        result.addErrback(self._error)
        if result.called:
            result.addCallback(self.answer)
            return
        self._pending = result
        self._hold("command")
        result.addCallback(self._answered)

    def _authenticate(self, name, words):
        """
        The C{auth TOKEN} line, and any other line before it.  The token is
        compared in constant time and never logged or echoed.
        """
        token = self.factory.token
        if name != "auth":
            self.answer(["ERROR authenticate first: auth <token>"])
            return
        if token is None or self.authenticated:
            self.answer(["OK"])
            return
        given = words[1].encode("latin-1") if len(words) == 2 else b""
        if hmac.compare_digest(given, token.encode("utf-8")):
            self.authenticated = True
            self.answer(["OK"])
            return
        self.log.warn("command socket: client {peer} sent a wrong token; closing it",  # noqa: G010
                      peer=self._peer())
        self.factory.counts["wrong_token"] += 1
        self.answer(["ERROR wrong token"])
        self.close()

    def _answered(self, lines):
        self._pending = None
        if self._lost:
            return
        self.answer(lines)
        self._release("command")

    def _error(self, failure):
        if failure.check(defer.CancelledError) and self._lost:
            return None
        if failure.check(CommandError):
            return [f"ERROR {failure.value}"]
        self.log.failure("command socket: command failed", failure)
        return ["ERROR internal error (see grott's log)"]

    def answer(self, lines):
        if self._lost or lines is None:
            return
        out = [line.encode("latin-1", "replace") + b"\r\n" for line in lines]
        out.append(b"\r\n")
        data = b"".join(out)
        if "unread" in self._holds and self._unread() + len(data) > self.factory.max_unread:
            self.log.warn("command socket: client {peer} leaves {unread} bytes of answers "  # noqa: G010
                          "unread; closing it", peer=self._peer(), unread=self._unread())
            self.factory.counts["closed_unread"] += 1
            self.close(abort=True)
            return
        self.transport.write(data)

    # ---------------------------------------------------------------- commands

    def _args(self, name, args, low, high):
        if not low <= len(args) <= high:
            raise CommandError(f"usage: {_USAGE[name]}")

    def do_list(self, args, line):
        if args:
            raise CommandError("usage: list")
        return [f"{serial} | {inverter or '-'} | {protocol}"
                for serial, inverter, protocol in self.factory.dispatcher.dataloggers()]

    def do_read(self, args, line):
        self._args("read", args, 2, 3)
        register = _number(args[1], "register")
        count = _number(args[2], "count") if len(args) == 3 else 1
        d = self.factory.control.read(args[0], register, count)
        return d.addCallback(lambda held: [f"Reg: {r} Value: {v}" for r, v in held.items()])

    def _who(self):
        peer = self.transport.getPeer()
        return f"telnet {getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"

    def do_set(self, args, line):
        self._args("set", args, 3, 3)
        register = _number(args[1], "register")
        value = _number(args[2], "value")
        d = self.factory.control.write(args[0], register, [value], self._who())
        return d.addCallback(lambda held: [f"SET Reg: {r} Value: {v}" for r, v in held.items()])

    def do_mset(self, args, line):
        self._args("mset", args, 3, 3 + MAX_WRITE)
        register = _number(args[1], "register")
        values = [_number(a, "value") for a in args[2:]]
        d = self.factory.control.write(args[0], register, values, self._who())
        return d.addCallback(lambda held: [f"SET Reg: {r} Value: {v}" for r, v in held.items()])

    def do_setting(self, args, line):
        self._args("setting", args, 1, 2 + len(args))
        control = self.factory.control
        if len(args) == 1:
            family = control.family(args[0])
            return [f"family {family or 'unknown (no record decoded yet)'}:"] + [
                _setting_line(s) for s in control.settings(args[0])]
        if len(args) == 2:
            d = control.get(args[0], args[1].lower())
        else:
            # The value is the rest of the line: a slot or a clock has spaces.
            value = line.strip().split(None, 3)[3]
            d = control.set(args[0], args[1].lower(), value, self._who())
        return d.addCallback(lambda answer: [
            f"SETTING {answer['setting']} Value: {answer['value']} ("
            + ", ".join(f"reg {r}={v}" for r, v in answer["registers"].items()) + ")"])

    def do_dread(self, args, line):
        self._args("dread", args, 2, 2)
        register = _number(args[1], "register")
        d = self.factory.dispatcher.read_config(args[0], register)
        return d.addCallback(lambda rv: [f"Reg: {rv[0]} Value: {_printable(rv[1])}"])

    def do_dset(self, args, line):
        self._args("dset", args, 3, 3 + len(args))
        register = _number(args[1], "register")
        # The value is the rest of the line: a clock value has a space in it.
        value = line.strip().split(None, 3)[3]
        d = self.factory.control.dwrite(args[0], register, value, self._who())
        return d.addCallback(lambda held: [f"SET Reg: {r} Value: {_printable(v)}"
                                           for r, v in held.items()])

    def do_stats(self, args, line):
        return [text for text in self.factory.report() if text.strip()]

    def do_help(self, args, line):
        return HELP + settings_help()

    def do_quit(self, args, line):
        self.close()


class CommandFactory(ServerFactory):
    """
    The admin listener's factory.

    @param report: returns the stats report as lines.
    @param listen: the endpoint description, for the start-up log lines.
    @param control: the L{grott.control.Control} every write goes through
        (default: one with the default safety rules).
    """

    protocol = CommandProtocol
    noisy = False
    log = Logger()

    def __init__(self, dispatcher, report, listen=None, max_clients=MAX_CLIENTS, *,
                 clock=None, idle_timeout=IDLE_TIMEOUT, rate=RATE_LIMIT, burst=None,
                 token=None, max_unread=MAX_UNREAD, control=None):
        if control is None:
            from grott.control import Control  # grott.control builds on this module
            control = Control(dispatcher)
        self.control = control
        self.dispatcher = dispatcher
        self.report = report
        self.listen = listen
        self.max_clients = max_clients
        self.clock = dispatcher.clock if clock is None else clock
        self.idle_timeout = idle_timeout
        self.rate = rate
        self.burst = rate if burst is None else burst
        self.token = token or None
        self.max_unread = max_unread
        self.clients = set()
        #: closed_idle, closed_unread, wrong_token, slowed: for the stats report
        self.counts = collections.Counter()

    def report_lines(self):
        """
        The admin socket's part of the stats report.
        """
        c = self.counts
        return [(f"  command socket: clients={len(self.clients)} closed_idle={c['closed_idle']} "
                f"closed_unread={c['closed_unread']} wrong_token={c['wrong_token']} "
                f"slowed={c['slowed']}")]

    def startFactory(self):
        if self.listen is None:
            return
        self.log.info("command socket listening on {listen}{auth}", listen=self.listen,
                      auth=" (clients authenticate with auth TOKEN)" if self.token else "")
        if self.token is None and not is_loopback(self.listen):
            # service.validate refuses this configuration; a factory built
            # by hand still says so.
            self.log.warn("command socket {listen} is not bound to a loopback interface "  # noqa: G010
                          "and has no command.token: anyone who can reach it can change "
                          "inverter and datalogger settings", listen=self.listen)

    def stopFactory(self):
        for client in list(self.clients):
            client.close()

    def buildProtocol(self, addr):
        if len(self.clients) >= self.max_clients:
            self.log.warn("command socket: refusing {peer}, {count} clients connected",  # noqa: G010
                          peer=str(addr), count=len(self.clients))
            return None
        return ServerFactory.buildProtocol(self, addr)


def _split_description(description):
    parts, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def is_loopback(description):
    """
    Whether a server endpoint description only accepts local clients: a
    UNIX socket, or an interface that is a loopback address.  No interface
    means every interface.
    """
    parts = _split_description(description)
    kind = parts[0].lower()
    if kind == "unix":
        return True
    interface = None
    positional = []
    for part in parts[1:]:
        if "=" in part:
            key, _, value = part.partition("=")
            if key == "interface":
                interface = value
        else:
            positional.append(part)
    if interface is None and kind in ("tcp", "tcp6") and len(positional) > 1:
        interface = positional[1]
    if not interface:
        return False
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False
