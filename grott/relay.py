"""
The relay's states and transitions, without I/O.

A datalogger connection is always in exactly one of these states:

    CONNECTING   first upstream attempt in flight; datalogger bytes are held
    RELAYING     upstream connected; bytes go through unchanged
    LOCAL        cloud away: grott answers the datalogger, a retry is timed
    RETRYING     cloud away: grott answers, a retry attempt is in flight
    CLOUD_FREE   no cloud configured: grott answers, for good
    CLOSING      both sides are being closed; nothing new starts

    CONNECTING --connected--> RELAYING --lost--> LOCAL (or CLOSING)
    CONNECTING --failed-----> LOCAL (or CLOSING)
    LOCAL --retry due--> RETRYING --connected--> RELAYING
                         RETRYING --failed-----> LOCAL
    any --close / datalogger gone--> CLOSING

(the "or CLOSING" arms are C{upstream_fallback: close}).  L{RelayMachine}
takes these inputs as method calls and acts through an L{IRelayDriver}: the
protocols in L{grott.proxy} drive it and do the I/O it asks for, so every
transition can be tested with no transport and no reactor, and no state is
implied by which attributes happen to be set.

It also owns what a transition needs: the bytes held until the first
upstream connection is up, and the packets the cloud has received but not
yet answered (answered locally if the cloud drops first, so the datalogger
sees exactly one answer per packet).
"""

import dataclasses
import datetime

from zope.interface import Interface

from grott.codec import (
    COMMANDS,
    CodecError,
    ConfigSetRequest,
    RecordType,
    build,
    build_ack,
)
from grott.logs import Logger
from grott.session import CLOSED, CONNECTED, FAILED, NONE
from grott.session import CONNECTING as UPSTREAM_CONNECTING

__all__ = [
    "CLOSING",
    "CLOUD_FREE",
    "CONNECTING",
    "LOCAL",
    "RELAYING",
    "RETRYING",
    "IRelayDriver",
    "RelayMachine",
    "RelaySettings",
]

CONNECTING = "connecting"
RELAYING = "relaying"
LOCAL = "answering locally"
RETRYING = "retrying"
CLOUD_FREE = "cloud-free"
CLOSING = "closing"

#: What C{Session.mode} shows for each state (stats, SIGUSR1 report).
_MODES = {CONNECTING: RELAYING, RELAYING: RELAYING, LOCAL: LOCAL, RETRYING: LOCAL,
          CLOUD_FREE: CLOUD_FREE}

#: Answered packets remembered per session until the cloud answers them.
UNANSWERED_LIMIT = 64

#: Datalogger configuration register holding its clock.
CLOCK_REGISTER = 31


class IRelayDriver(Interface):
    """
    The I/O a L{RelayMachine} asks for; the datalogger protocol provides it.
    """

    def connectUpstream():
        """Start one attempt to connect upstream; report back through the machine."""

    def cancelConnect():
        """Give up the attempt in flight, if any."""

    def startTimer(delay):
        """Call C{machine.retryDue()} after C{delay} seconds."""

    def cancelTimer():
        """Cancel the timer started by L{startTimer}, if pending."""

    def startRelaying(held):
        """
        The upstream is up: write C{held} (a list of byte strings) to it and
        couple the two transports' flow control.
        """

    def stopRelaying():
        """The upstream is gone: uncouple the flow control."""

    def answerLocally():
        """
        grott answers the datalogger from now on: couple reading from it to
        its reading of grott's answers, so a datalogger that does not read
        cannot make grott buffer answers without bound.
        """

    def toDatalogger(data):
        """Write bytes grott built to the datalogger."""

    def pauseReading():
        """Stop reading from the datalogger (the held bytes reached their bound)."""

    def resumeReading():
        """Read from the datalogger again."""

    def closeBoth():
        """Close the datalogger connection and the upstream, if any."""


@dataclasses.dataclass
class RelaySettings:
    """
    What every connection's machine shares (one instance per listener,
    read at each use, so a change applies to live connections too).

    @ivar cloud: whether there is an upstream at all (False: cloud-free).
    @ivar fallback_local: answer locally when the cloud is away (else close).
    @ivar set_time: C{"auto"} (set the clock in cloud-free mode only), True
        or False.
    @ivar clock: an L{IReactorTime} (for the time the clock is set to).
    """

    cloud: bool
    fallback_local: bool
    clock: object
    upstream_label: str = "upstream"
    retry_initial: float = 1.0
    retry_max: float = 30.0
    pending_limit: int = 65536
    set_time: object = "auto"
    timezone: object = None


class RelayMachine:
    """
    The state of one datalogger connection's relay; see the module docstring.

    @ivar state: one of the module's state constants.
    @ivar unanswered: (record type, sequence) -> packet, sent upstream and
        not yet answered by the cloud (only with C{fallback_local}), or None
        when there are none.
    @ivar held: (bytes, packet or None) held until the upstream is up, or
        None.  Both are None most of the time: thousands of idle
        connections then cost no empty containers.
    """

    __slots__ = ("driver", "held", "held_size", "retries", "session", "settings", "state",
                 "unanswered")

    log = Logger()

    def __init__(self, settings, session, driver):
        self.settings = settings
        self.session = session
        self.driver = driver
        self.state = None
        self.retries = 0
        self.held = None
        self.held_size = 0
        self.unanswered = None

    def _enter(self, state):
        self.state = state
        mode = _MODES.get(state)
        if mode is not None:
            self.session.mode = mode

    # -- inputs -------------------------------------------------------------

    def start(self):
        """The datalogger connected."""
        if self.settings.cloud:
            self._enter(CONNECTING)
            self.session.upstream_state = UPSTREAM_CONNECTING
            self.driver.connectUpstream()
        else:
            self._enter(CLOUD_FREE)
            self.session.upstream_state = NONE
            self.driver.answerLocally()

    def fromDatalogger(self, packet):
        """
        A packet from the datalogger that nobody claimed.

        @return: True when the protocol is to write it upstream now.
        """
        state = self.state
        if state is RELAYING:
            if self.settings.fallback_local and packet.record_type not in COMMANDS:
                self._remember(packet)
            return True
        if state is CONNECTING:
            self._hold(packet.raw, packet)
        elif state is not CLOSING:
            self.answer(packet)
        return False

    def garbageFromDatalogger(self, data):
        """
        Bytes that are not a packet.

        @return: True when the protocol is to write them upstream now.
        """
        state = self.state
        if state is RELAYING:
            return True
        if state is CONNECTING:
            self._hold(data, None)
        return False

    def fromCloud(self, packet):
        """The cloud answered (or sent) C{packet}: it no longer waits for an answer."""
        unanswered = self.unanswered
        if unanswered is not None:
            unanswered.pop((packet.record_type, packet.sequence), None)
            if not unanswered:
                self.unanswered = None

    def upstreamConnected(self):
        """
        An upstream attempt succeeded.

        @return: False when the connection is closing (the protocol drops
            the new upstream connection).
        """
        state = self.state
        if state is CLOSING:
            return False
        session = self.session
        session.upstream_state = CONNECTED
        if state is RETRYING:
            # Back to relaying at a packet boundary: everything the
            # datalogger sent so far was answered locally.
            self.log.info("datalogger {who}: upstream {upstream} is back after {tries} "
                          "retries; relaying again", who=session.name,
                          serial=session.datalogger_serial, tries=self.retries,
                          upstream=self.settings.upstream_label)
        self._enter(RELAYING)
        self.retries = 0
        held, self.held, self.held_size = self.held or (), None, 0
        datas = []
        for data, packet in held:
            datas.append(data)
            if packet is not None and self.settings.fallback_local \
                    and packet.record_type not in COMMANDS:
                self._remember(packet)
        self.driver.startRelaying(datas)
        self.driver.resumeReading()
        return True

    def upstreamFailed(self, cause):
        """An upstream attempt failed (refused, timed out, ...): C{cause} says how."""
        state = self.state
        if state is CLOSING:
            return
        session = self.session
        session.upstream_state = FAILED
        label = self.settings.upstream_label
        if not self.settings.fallback_local:
            self.log.error("datalogger {who} from {peer}: upstream {upstream} unreachable: "
                           "{cause}; closing the datalogger connection",
                           who=session.name, serial=session.datalogger_serial, peer=session.peer,
                           upstream=label, cause=cause)
            self.close(f"upstream {label} unreachable")
            return
        if state is CONNECTING:
            self.log.warn("datalogger {who} from {peer}: upstream {upstream} unreachable: "
                          "{cause}; answering the datalogger locally and retrying",
                          who=session.name, serial=session.datalogger_serial, peer=session.peer,
                          upstream=label, cause=cause)
            self._goLocal()
        else:
            self.log.debug("datalogger {who}: upstream retry {tries} failed: {cause}",
                           who=session.name, serial=session.datalogger_serial,
                           tries=self.retries, cause=cause)
            self._enter(LOCAL)
        self._scheduleRetry()

    def upstreamLost(self, cause, partial):
        """
        The upstream connection closed; C{partial} bytes of a packet from
        the cloud were left unframed.

        @return: True when the protocol is to pass those bytes on to the
            datalogger (closing anyway); False to drop them (grott answers
            next, and half a packet would garble that answer).
        """
        session = self.session
        session.upstream_state = CLOSED
        if self.state is CLOSING:
            return True
        if not self.settings.fallback_local:
            self.close(f"upstream closed ({cause})")
            return True
        if partial:
            self.log.warn("datalogger {who}: upstream closed in the middle of a packet; "
                          "dropped its first {count} bytes",
                          who=session.name, serial=session.datalogger_serial, count=partial)
        self.log.warn("datalogger {who}: upstream {upstream} closed ({cause}); answering "
                      "the datalogger locally and retrying", who=session.name,
                      serial=session.datalogger_serial, upstream=self.settings.upstream_label,
                      cause=cause)
        self.driver.stopRelaying()
        self._goLocal()
        self._scheduleRetry()
        return False

    def retryDue(self):
        """The retry timer fired."""
        if self.state is LOCAL:
            self._enter(RETRYING)
            self.session.upstream_state = UPSTREAM_CONNECTING
            self.driver.connectUpstream()

    def close(self, why):
        """Close both sides (idle, replaced, shutdown, upstream gone)."""
        if self.state is CLOSING:
            return
        if self.session.closed_by is None:
            self.session.closed_by = why
        self._enter(CLOSING)
        self.driver.cancelTimer()
        self.driver.cancelConnect()
        self.driver.closeBoth()

    def dataloggerLost(self):
        """The datalogger connection is gone (whoever closed it)."""
        if self.session.closed_by is None:
            self.session.closed_by = "datalogger closed the connection"
        self._enter(CLOSING)
        self.driver.cancelTimer()
        self.driver.cancelConnect()

    # -- answering locally --------------------------------------------------

    def answer(self, packet):
        """
        Answer C{packet} as the Growatt server would: echo a ping, ack
        everything else except replies to commands (never acked).  After an
        announce, set the datalogger's clock when configured (by default in
        cloud-free mode only).
        """
        kind = packet.record_type
        if kind in COMMANDS:
            return
        self._send(packet.raw if kind == RecordType.PING else build_ack(packet))
        self.session.local_acks += 1
        if kind == RecordType.ANNOUNCE and self._wantsClockSet():
            self._setClock(packet)

    def _send(self, data):
        self.session.local_bytes += len(data)
        self.driver.toDatalogger(data)

    def _wantsClockSet(self):
        set_time = self.settings.set_time
        if set_time == "auto":
            return self.state is CLOUD_FREE
        return bool(set_time)

    def _setClock(self, packet):
        settings = self.settings
        session = self.session
        now = datetime.datetime.fromtimestamp(settings.clock.seconds(), settings.timezone)
        text = now.strftime("%Y-%m-%d %H:%M:%S")
        try:
            data = build(ConfigSetRequest(CLOCK_REGISTER, text.encode("ascii")),
                         session.datalogger_serial or packet.payload[:10],
                         protocol=packet.protocol, sequence=1)
        except CodecError as e:
            self.log.warn("cannot set the clock of datalogger {who}: {error}",
                          who=session.name, serial=session.datalogger_serial, error=str(e))
            return
        self._send(data)
        self.log.info("datalogger {who}: clock set to {clock_time}",
                      who=session.name, serial=session.datalogger_serial, clock_time=text)

    # -- helpers ------------------------------------------------------------

    def _hold(self, data, packet):
        if self.held is None:
            self.held = []
        self.held.append((data, packet))
        self.held_size += len(data)
        if self.held_size > self.settings.pending_limit:
            # Stop reading until the upstream is up; the kernel holds the rest.
            self.driver.pauseReading()

    def _remember(self, packet):
        unanswered = self.unanswered
        if unanswered is None:
            unanswered = self.unanswered = {}
        unanswered[(packet.record_type, packet.sequence)] = packet
        if len(unanswered) > UNANSWERED_LIMIT:
            del unanswered[next(iter(unanswered))]

    def _goLocal(self):
        """Answer the datalogger from now on, starting with what nobody answered."""
        self._enter(LOCAL)
        self.driver.answerLocally()
        held, self.held, self.held_size = self.held or (), None, 0
        unanswered, self.unanswered = self.unanswered or {}, None
        for packet in unanswered.values():
            self.answer(packet)
        for _data, packet in held:
            if packet is not None:
                self.answer(packet)
        self.driver.resumeReading()

    def _scheduleRetry(self):
        settings = self.settings
        delay = min(settings.retry_initial * 2 ** self.retries, settings.retry_max)
        self.retries += 1
        self._enter(LOCAL)
        self.driver.startTimer(delay)

