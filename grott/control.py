"""
The control plane: every read and write of inverter and datalogger registers
that a user asks for, from the command socket, MQTT or Home Assistant.

The front ends only parse and format; the rules live here, once:

 - writes go to the registers of the inverter family's writable list
   (L{grott.settings}) unless C{control.allow_raw_writes} is on; datalogger
   registers 17-19 (the server address) are refused while
   C{proxy.protect_server_address} is on, whatever else is allowed;
 - every write reads the registers first (the audit's "old"), writes them
   (0x06 for one, 0x10 for several, so a multi-register setting lands at
   once), reads them back and answers with what the inverter now holds; a
   read-back that differs from what was written is an error;
 - every write, refused or not, is one audit line at info (who, what,
   old -> new, result) and counted for the stats report.

Everything goes through the L{grott.commands.CommandDispatcher}, which owns
the wire (one command per datalogger at a time, timeouts, swallowing the
replies so the cloud never sees them).
"""

import collections
import time

from twisted.internet import defer

from grott import settings as catalogue
from grott.commands import REDIRECTING_CONFIG, CommandError
from grott.logs import Logger

__all__ = ["Control", "Mismatch", "WriteRefused"]


class WriteRefused(CommandError):
    """grott's own safety rules refused a write; nothing was sent."""


class Mismatch(CommandError):
    """
    The inverter (or datalogger) holds something other than what was
    written.  C{held} is what the read-back found.
    """

    def __init__(self, text, held):
        CommandError.__init__(self, text)
        self.held = held


class Control:
    """
    The rules and the audit around a L{grott.commands.CommandDispatcher}.

    Every method returns a Deferred; bad arguments, refusals and an unknown
    datalogger fail it with a L{CommandError} whose text is for users.

    @param now: returns epoch seconds (for clocks set to C{now}).
    @param timezone: the inverters' local time zone (a C{tzinfo}, as
        C{proxy.timezone}); None: this machine's.
    """

    log = Logger()

    def __init__(self, dispatcher, *, allow_raw_writes=False, protect_server_address=True,
                 now=time.time, timezone=None):
        self.dispatcher = dispatcher
        self.timezone = timezone
        self.allow_raw_writes = allow_raw_writes
        self.protect_server_address = protect_server_address
        self.now = now
        self.counts = collections.Counter()
        #: callables (serial, {register: value}) told of every register
        #: value read or written, so front ends can show fresh state.
        self.observers = []

    # ---------------------------------------------------------------- queries

    def family(self, serial):
        """The detected (or configured) family of C{serial}'s inverter, or None."""
        session = self.dispatcher.find_session(serial)
        return getattr(session, "family", None)

    def settings(self, serial):
        return catalogue.for_family(self.family(serial))

    def report_lines(self):
        c = self.counts
        return [(f"  control writes: total={c['writes']} ok={c['ok']} refused={c['refused']} "
                 f"mismatch={c['mismatch']} failed={c['failed']}")]

    # ---------------------------------------------------------------- reads

    def read(self, serial, register, count=1, via="admin"):
        """
        Holding registers: a Deferred of {register: value}.

        @param via: the front end asking, for the dispatcher's metrics
            (C{admin}, C{mqtt}, C{hass}).
        """
        return defer.Deferred.fromCoroutine(self._read(serial, register, count, via))

    async def _read(self, serial, register, count=1, via="admin"):
        pairs = await self.dispatcher.read_registers(serial, register, count, via=via)
        values = dict(pairs)
        self._tell(serial, values)
        return values

    def dread(self, serial, register, via="admin"):
        """A datalogger register: a Deferred of {register: text}."""
        return defer.Deferred.fromCoroutine(self._dread(serial, register, via))

    async def _dread(self, serial, register, via="admin"):
        register, text = await self.dispatcher.read_config(serial, register, via=via)
        return {register: text}

    def get(self, serial, name, via="admin"):
        """
        A named setting's current value: a Deferred of the setting's answer
        (see L{set}).
        """
        return defer.Deferred.fromCoroutine(self._get(serial, name, via))

    async def _get(self, serial, name, via="admin"):
        setting = self._setting(serial, name)
        values = await self._read(serial, setting.register, setting.count, via)
        return self._setting_answer(setting, values)

    # ---------------------------------------------------------------- writes

    def write(self, serial, register, values, who):
        """
        Write C{values} (a list) to consecutive holding registers from
        C{register}, then read them back.

        @param who: the requester, for the audit line.
        @return: a Deferred of {register: value held after the write}.
        """
        return defer.Deferred.fromCoroutine(
            self._write(serial, register, list(values), who, None))

    def set(self, serial, name, value, who):
        """
        Set a named setting.

        @return: a Deferred of {"setting", "value", "registers"}: the value
            as the inverter now holds it, and the raw registers.
        """
        return defer.Deferred.fromCoroutine(self._set(serial, name, value, who))

    async def _set(self, serial, name, value, who):
        try:
            setting = self._setting(serial, name)
            try:
                words = setting.encode(value, now=self.now(), tz=self.timezone)
            except catalogue.SettingError as e:
                raise CommandError(str(e)) from None
        except CommandError as e:
            self._audit_refused(who, serial, f"setting {name} := {value!r}", str(e))
            raise
        check = None
        if setting.kind == "clock":
            def check(wanted, held):
                return catalogue.clock_matches(wanted, held)
        def show(values):
            return repr(setting.decode([values[r] for r in setting.registers]))
        values = await self._write(serial, setting.register, words, who,
                                   f"setting {name} := {value!r}", check=check, named=True,
                                   show=show)
        return self._setting_answer(setting, values)

    def dwrite(self, serial, register, text, who):
        """
        Set a datalogger configuration register and read it back.

        @return: a Deferred of {register: text held after the write}.
        """
        return defer.Deferred.fromCoroutine(self._dwrite(serial, register, text, who))

    async def _dwrite(self, serial, register, text, who):
        what = f"datalogger register {register} := {text!r}"
        self.counts["writes"] += 1
        try:
            self._check_datalogger(register)
        except WriteRefused as e:
            self._audit_refused(who, serial, what, str(e), counted=True)
            raise
        old = None
        via = _via(who)
        try:
            old = await self._dread(serial, register, via)
            await self.dispatcher.write_config(serial, register, text, via=via)
            held = await self._dread(serial, register, via)
        except CommandError as e:
            self._audit(who, serial, what, "?" if old is None else repr(old[register]), "?",
                        f"failed: {e}", "failed")
            raise
        ok = held[register] == text or (register == 31 and _clock_text_close(text, held[register]))
        if not ok:
            error = (f"read-back mismatch: datalogger register {register} holds "
                     f"{held[register]!r}, not {text!r}")
            self._audit(who, serial, what, old[register], held[register], error, "mismatch")
            raise Mismatch(error, held)
        self._audit(who, serial, what, old[register], held[register], "ok", "ok")
        return held

    async def _write(self, serial, register, values, who, what, check=None, named=False,
                     show=None):
        if not named:
            what = (f"register {register} := {values[0]}" if len(values) == 1 else
                    f"registers {register}..{register + len(values) - 1} := {values}")
        self.counts["writes"] += 1
        try:
            if not values:
                raise CommandError("no values to write")
            for value in values:
                if isinstance(value, bool) or not isinstance(value, int) \
                        or not 0 <= value <= 0xFFFF:
                    raise CommandError(f"value {value!r} is out of range (0..65535)")
            if not named:
                self._check_inverter(serial, register, len(values))
        except CommandError as e:
            self._audit_refused(who, serial, what, str(e), counted=True)
            raise
        dispatcher = self.dispatcher
        show = show or _words
        old = None
        via = _via(who)
        try:
            old = await self._read(serial, register, len(values), via)
            if len(values) == 1:
                await dispatcher.write_register(serial, register, values[0], via=via)
            else:
                await dispatcher.write_registers(serial, register, values, via=via)
            held = await self._read(serial, register, len(values), via)
        except CommandError as e:
            # After a failed write or read-back the inverter's value is unknown.
            self._audit(who, serial, what, "?" if old is None else show(old), "?",
                        f"failed: {e}", "failed")
            raise
        wanted = dict(zip(range(register, register + len(values)), values))
        ok = check(values, [held[r] for r in wanted]) if check else held == wanted
        old_text, new_text = show(old), show(held)
        if not ok:
            wrong = ", ".join(f"register {r} holds {held[r]}, not {v}"
                              for r, v in wanted.items() if held[r] != v)
            error = f"read-back mismatch: {wrong}"
            self._audit(who, serial, what, old_text, new_text, error, "mismatch")
            raise Mismatch(error, held)
        self._audit(who, serial, what, old_text, new_text, "ok", "ok")
        return held

    # ---------------------------------------------------------------- rules

    def _setting(self, serial, name):
        try:
            return catalogue.find(self.family(serial), name)
        except catalogue.SettingError as e:
            raise CommandError(str(e)) from None

    def _check_inverter(self, serial, register, count):
        if self.allow_raw_writes:
            self.dispatcher.find_session(serial)
            return
        family = self.family(serial)
        allowed = catalogue.writable(family)
        outside = [r for r in range(register, register + count) if r not in allowed]
        if outside:
            raise WriteRefused(
                f"register {outside[0]} is not writable for family {family or 'unknown'} "
                "(see help for the settings; control.allow_raw_writes allows any)")

    def _check_datalogger(self, register):
        if register in REDIRECTING_CONFIG and self.protect_server_address:
            raise WriteRefused(f"datalogger register {register} (server address) is "
                               "protected (proxy.protect_server_address)")
        if not self.allow_raw_writes and register not in catalogue.datalogger_writable():
            allowed = ", ".join(str(r) for r in sorted(catalogue.datalogger_writable()))
            raise WriteRefused(f"datalogger register {register} is not writable (allowed: "
                               f"{allowed}; control.allow_raw_writes allows any)")

    # ---------------------------------------------------------------- audit

    def _audit_refused(self, who, serial, what, reason, counted=False):
        if not counted:
            self.counts["writes"] += 1
        self._audit(who, serial, what, "?", "?", f"refused: {reason}", "refused")

    def _audit(self, who, serial, what, old, new, result, outcome):
        self.counts[outcome] += 1
        self.log.info("control: {who} on {serial}: {what}: {old} -> {new}: {result}",
                      who=who, serial=serial, what=what, old=old, new=new, result=result,
                      audit=True)

    def _tell(self, serial, values):
        for observer in list(self.observers):
            try:
                observer(serial, values)
            except Exception:  # noqa: BLE001 - a front end's bug must not fail the command
                self.log.failure("control: observer failed")

    @staticmethod
    def _setting_answer(setting, values):
        words = [values[r] for r in setting.registers]
        return {"setting": setting.name, "value": setting.decode(words),
                "registers": {r: values[r] for r in setting.registers}}


def _via(who):
    """The front end a requester description names (the dispatcher's C{via})."""
    if who.startswith("mqtt"):
        return "mqtt"
    if who.startswith("home assistant"):
        return "hass"
    return "admin"


def _words(values):
    items = list(values.values())
    return str(items[0]) if len(items) == 1 else str(items)


def _clock_text_close(wanted, held, tolerance=120):
    try:
        a = time.mktime(time.strptime(wanted, "%Y-%m-%d %H:%M:%S"))
        b = time.mktime(time.strptime(held, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return False
    return abs(a - b) <= tolerance
