"""
The inverter settings grott lets users change, per family, and the holding
registers a write may touch.

Writing an arbitrary holding register can stop an inverter, change its grid
code or brick a battery, so the control plane (L{grott.control}) only writes
registers on the family's writable list (L{writable}) unless the user turns
C{control.allow_raw_writes} on.  The list is the registers of the named
settings below plus a few documented ones that have no name yet.

A L{Setting} knows its registers, unit, range and scale and turns a user's
value into register words (L{Setting.encode}) and words back into the value
users see (L{Setting.decode}).  Sources: protocol.md section 10.6 (Growatt
Modbus RTU protocol II v1.2x and v3.x holding register tables); the
slot layout (start and end as hour * 256 + minute, then enable) is the
SPH/SPA one.

docs/settings.md is generated from this module (C{python -m grott.settings})
and a test keeps it current.  No I/O here.
"""

import dataclasses
import datetime
import re
import sys
import time

__all__ = ["FAMILY_TITLES", "SETTINGS", "Setting", "SettingError", "clock_matches",
           "datalogger_writable", "find", "for_family", "render", "writable"]


class SettingError(ValueError):
    """A value that does not fit the setting; the text says why."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """
    One named setting.

    @ivar kind: C{number}, C{switch}, C{select}, C{slot} (start, end,
        enable: three registers written at once) or C{clock} (year, month,
        day, hour, minute, second: six registers written at once).
    @ivar scale: raw = value * scale (numbers).
    @ivar options: raw value -> label (selects; switches use on/off).
    """

    name: str
    register: int
    kind: str
    title: str
    unit: str = ""
    minimum: float = None
    maximum: float = None
    scale: int = 1
    signed: bool = False
    options: tuple = ()

    @property
    def count(self):
        return {"slot": 3, "clock": 6}.get(self.kind, 1)

    @property
    def registers(self):
        return range(self.register, self.register + self.count)

    def describe(self):
        """The range column of the docs and of C{help}."""
        if self.kind == "number":
            low, high = _show(self.minimum), _show(self.maximum)
            return f"{low}..{high} {self.unit}".rstrip()
        if self.kind == "switch":
            return "on, off"
        if self.kind == "select":
            return ", ".join(f"{raw} {label}" for raw, label in self.options)
        if self.kind == "slot":
            return "HH:MM-HH:MM on|off"
        return "YYYY-MM-DD HH:MM:SS or now"

    # ------------------------------------------------------------ values

    def encode(self, value, now=None, tz=None):
        """
        The register words for C{value} (a number, text, or for slots a
        mapping with start, end, enabled); L{SettingError} if it does not fit.

        @param now: epoch seconds, for a clock set to C{now}.
        @param tz: the inverter's time zone (a C{tzinfo}) for C{now}; None:
            this machine's local time.
        """
        if self.kind == "clock":
            return self._encode_clock(value, now, tz)
        return getattr(self, "_encode_" + self.kind)(value, now)

    def decode(self, words):
        """The value users see for the register words C{words}."""
        return getattr(self, "_decode_" + self.kind)(list(words))

    def _encode_number(self, value, now):
        number = _as_number(value, self.name)
        if not self.minimum <= number <= self.maximum:
            raise SettingError(f"{self.name}: {_show(number)} is outside "
                               f"{self.describe()}")
        raw = round(number * self.scale)
        return [raw & 0xFFFF]

    def _decode_number(self, words):
        raw = words[0]
        if self.signed and raw >= 0x8000:
            raw -= 0x10000
        return _show(raw / self.scale) if self.scale != 1 else raw

    def _encode_switch(self, value, now):
        text = str(value).strip().lower()
        if value is True or text in ("on", "1", "true", "enable", "enabled"):
            return [1]
        if value is False or text in ("off", "0", "false", "disable", "disabled"):
            return [0]
        raise SettingError(f"{self.name}: {value!r} is not on or off")

    def _decode_switch(self, words):
        return {0: "off", 1: "on"}.get(words[0], words[0])

    def _encode_select(self, value, now):
        text = str(value).strip().lower()
        for raw, label in self.options:
            if text in (str(raw), label.lower()):
                return [raw]
        raise SettingError(f"{self.name}: {value!r} is not one of {self.describe()}")

    def _decode_select(self, words):
        return dict(self.options).get(words[0], words[0])

    def _encode_slot(self, value, now):
        if isinstance(value, dict):
            start, end, enabled = value.get("start"), value.get("end"), value.get("enabled", True)
            if not isinstance(start, str) or not isinstance(end, str):
                raise SettingError(f"{self.name}: start and end must be HH:MM texts")
        else:
            match = re.fullmatch(r"\s*(\S+)\s*-\s*(\S+)(?:\s+(\S+))?\s*", str(value))
            if match is None:
                raise SettingError(f"{self.name}: {value!r} is not HH:MM-HH:MM on|off")
            start, end, enabled = match.group(1), match.group(2), match.group(3) or "on"
        flag = Setting(self.name, 0, "switch", "")._encode_switch(enabled, now)[0]
        return [_hhmm(start, self.name), _hhmm(end, self.name), flag]

    def _decode_slot(self, words):
        start, end, flag = words
        state = {0: "off", 1: "on"}.get(flag, str(flag))
        return f"{_hhmm_text(start)}-{_hhmm_text(end)} {state}"

    def _encode_clock(self, value, now, tz=None):
        if str(value).strip().lower() == "now":
            if now is None:
                raise SettingError(f"{self.name}: no clock to read 'now' from")
            if tz is None:
                t = time.localtime(now)
            else:
                t = datetime.datetime.fromtimestamp(now, tz).timetuple()
        else:
            try:
                t = time.strptime(str(value).strip(), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                raise SettingError(f"{self.name}: {value!r} is not YYYY-MM-DD HH:MM:SS "
                                   "or now") from None
        return [t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec]

    def _decode_clock(self, words):
        year, month, day, hour, minute, second = words
        return f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"


def _show(number):
    """A number as users write it: 80, not 80.0."""
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def _as_number(value, name):
    if isinstance(value, bool):
        raise SettingError(f"{name}: {value!r} is not a number")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(str(value).strip())
    except ValueError:
        raise SettingError(f"{name}: {value!r} is not a number") from None


def _hhmm(text, name):
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise SettingError(f"{name}: {text!r} is not a time of day HH:MM")
    return int(match.group(1)) << 8 | int(match.group(2))


def _hhmm_text(word):
    return f"{word >> 8:02d}:{word & 0xFF:02d}"


def clock_matches(wanted, held, tolerance=120):
    """
    Whether a clock read back is the one written: the inverter's clock runs
    on, so a few seconds (up to C{tolerance}) of difference are fine.
    """
    try:
        a = time.mktime(time.struct_time((*wanted, 0, 0, -1)))
        b = time.mktime(time.struct_time((*held, 0, 0, -1)))
    except (OverflowError, ValueError):
        return False
    return abs(b - a) <= tolerance


# ---------------------------------------------------------------- the catalogue

def _number(name, register, title, unit, low, high, scale=1, signed=False):
    return Setting(name, register, "number", title, unit, low, high, scale, signed)


ACTIVE_POWER_RATE = _number("active_power_rate", 3, "Active power rate limit", "%", 0, 100)
ON_OFF = Setting("on_off", 0, "switch", "Inverter on/off (remote)")
EXPORT_LIMIT_MODE = Setting("export_limit_mode", 122, "select", "Export limit mode", options=(
    (0, "off"), (1, "rs485"), (2, "rs232"), (3, "ct")))
EXPORT_LIMIT_RATE = _number("export_limit_rate", 123, "Export limit (share of rated power)",
                            "%", -100, 100, scale=10, signed=True)
CLOCK = Setting("inverter_clock", 45, "clock", "Inverter clock (local time)")


def _slots(prefix, first, title):
    return tuple(Setting(f"{prefix}_slot_{n}", first + 3 * (n - 1), "slot", f"{title} {n}")
                 for n in (1, 2, 3))


_V12 = (ON_OFF, ACTIVE_POWER_RATE, EXPORT_LIMIT_MODE, EXPORT_LIMIT_RATE, CLOCK)

SETTINGS = {
    "classic": (ACTIVE_POWER_RATE, CLOCK),
    "tlx": _V12 + (
        _number("grid_first_discharge_rate", 3036, "Grid first: discharge power rate", "%", 0, 100),
        _number("grid_first_stop_soc", 3037, "Grid first: stop discharging at SOC", "%", 0, 100),
        _number("battery_first_charge_rate", 3047, "Battery first: charge power rate", "%", 0, 100),
        _number("battery_first_stop_soc", 3048, "Battery first: stop charging at SOC", "%", 0, 100),
        Setting("ac_charge", 3049, "switch", "AC charge (battery first)"),
    ),
    "tl3x": _V12,
    "storage": _V12 + (
        Setting("priority", 1044, "select", "Priority (work mode)",
                options=((0, "load"), (1, "battery"), (2, "grid"))),
        _number("grid_first_discharge_rate", 1070, "Grid first: discharge power rate", "%", 0, 100),
        _number("grid_first_stop_soc", 1071, "Grid first: stop discharging at SOC", "%", 0, 100),
        *_slots("grid_first", 1080, "Grid first time slot"),
        _number("battery_first_charge_rate", 1090, "Battery first: charge power rate", "%", 0, 100),
        _number("battery_first_stop_soc", 1091, "Battery first: stop charging at SOC", "%", 0, 100),
        Setting("ac_charge", 1092, "switch", "AC charge (battery first)"),
        *_slots("battery_first", 1100, "Battery first time slot"),
    ),
    "spf": (
        ACTIVE_POWER_RATE,
        Setting("output_priority", 1, "select", "Output source priority", options=(
            (0, "battery"), (1, "pv"), (2, "utility"), (3, "pv-utility"))),
    ),
}

#: Writable holding registers that no named setting covers yet: the TL-XH
#: time periods 1-9 (a bitfield per register; raw writes only).
_EXTRA_WRITABLE = {
    "tlx": frozenset(range(3038, 3046)) | frozenset(range(3050, 3060)),
}

FAMILY_TITLES = {
    "classic": "Classic (old RTU protocol v3.x)",
    "tlx": "TL-X / TL-XH / MIN / MOD TL3-XH",
    "tl3x": "TL3-X (MAX, MID, MAC)",
    "storage": "Storage SPH / SPA / MIX",
    "spf": "Off-grid SPF",
}

#: Datalogger configuration registers a write may touch: upload interval
#: (minutes) and the clock.
DATALOGGER_WRITABLE = frozenset({4, 31})

#: For a datalogger whose inverter family is not known yet: what every
#: family shares.
_UNKNOWN = (ACTIVE_POWER_RATE,)


def for_family(family):
    """The settings of C{family} (or those every family has, for None)."""
    return SETTINGS.get(family, _UNKNOWN)


def find(family, name):
    """The setting C{name} of C{family}; L{SettingError} names the known ones."""
    for setting in for_family(family):
        if setting.name == name:
            return setting
    known = ", ".join(s.name for s in for_family(family))
    raise SettingError(f"no setting {name!r} for family {family or 'unknown'} (known: {known})")


def writable(family):
    """The holding registers a write to an inverter of C{family} may touch."""
    registers = set(_EXTRA_WRITABLE.get(family, ()))
    for setting in for_family(family):
        registers.update(setting.registers)
    return frozenset(registers)


def datalogger_writable():
    return DATALOGGER_WRITABLE


# ---------------------------------------------------------------- docs

_INTRO = """\
# Inverter settings (control plane)

Generated by `python -m grott.settings` from `grott/settings.py`; do not edit
by hand.

The named settings below can be read and changed through the command socket
(`setting <datalogger> <name> [<value>]`), MQTT (`{"op": "set", "setting":
NAME, "value": VALUE}`) and, with discovery on, Home Assistant.  Writes go
only to the registers listed here for the inverter's family; anything else is
refused unless `control.allow_raw_writes: true`.  Every write is read back;
the answer is what the inverter then holds.  Values: numbers in the unit
shown (raw = value x scale), switches `on`/`off`, selects by label or raw
number, slots `HH:MM-HH:MM on|off` (start, end and enable written at once
with one multi-register write), clocks `YYYY-MM-DD HH:MM:SS` or `now`.

Datalogger configuration registers that may be written: 4 (upload interval,
minutes) and 31 (clock).  Registers 17-19 (server address) are refused while
`proxy.protect_server_address` is on, even with raw writes allowed.
"""


def render():
    """The Markdown text of docs/settings.md."""
    parts = [_INTRO]
    for family, settings in SETTINGS.items():
        parts.append(f"## `{family}`: {FAMILY_TITLES[family]}\n")
        parts.append("| setting | registers | what | values | scale |")
        parts.append("|---|---:|---|---|---:|")
        for s in settings:
            regs = str(s.register) if s.count == 1 else f"{s.register}-{s.registers[-1]}"
            parts.append(f"| `{s.name}` | {regs} | {s.title} | {s.describe()} | "
                         f"{s.scale if s.kind == 'number' else ''} |")
        extra = sorted(_EXTRA_WRITABLE.get(family, ()))
        if extra:
            parts.append("")
            parts.append("Also writable (raw `set`/`mset` only, no name yet): "
                         + _ranges(extra) + ".")
        parts.append("")
    return "\n".join(parts)


def _ranges(numbers):
    spans, start, prev = [], numbers[0], numbers[0]
    for n in numbers[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(spans)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
