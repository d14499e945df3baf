"""
The decoding part of config.yaml, checked: C{registers} (extra or
overriding register definitions), C{families} (family per serial) and
C{dtc_filter} (which registers to extract per device type code).

Each function takes what YAML produced and returns immutable, normalised
data, or raises ValueError with a message naming the entry and the problem,
so the service can refuse to start with a sentence rather than decode
wrongly for months.
"""

import math
import re

from grott.registers.fields import HOLDING, INPUT, TABLES, Field
from grott.registers.maps import FAMILIES, family_name

__all__ = ["UserField", "parse_dtc_filter", "parse_families", "parse_registers", "problems"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_RAW_NAME = re.compile(r"^reg_\d+$")
_KEYS = ("name", "register", "unit", "scale", "bits", "signed", "family", "type", "length", "table")
_TYPES = ("number", "text")


class UserField:
    """
    A register definition from config.yaml: the field, the families it
    applies to (None = every family, and records of no known family) and
    its table (input or holding).
    """

    __slots__ = ("families", "field", "table")

    def __init__(self, field, families, table):
        self.field = field
        self.families = families
        self.table = table

    def applies_to(self, family, table):
        return table == self.table and (self.families is None or family in self.families)

    def __repr__(self):
        return f"<UserField {self.field!r} families={self.families} table={self.table}>"


def _reject(message):
    """Every problem is a ValueError whose message says where and what."""
    raise ValueError(message)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _families(value, where):
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        _reject(f"{where}: family must be a family name or a list of them, got {value!r}")
    result = set()
    for name in names:
        canonical = family_name(name)
        if canonical is None:
            _reject(f"{where}: unknown family {name!r} (known: {', '.join(FAMILIES)})")
        result.add(canonical)
    return frozenset(result)


def _one_register(index, entry):
    where = f"registers[{index}]"
    if not isinstance(entry, dict):
        _reject(f"{where}: expected a mapping with name and register, "
                         f"got {type(entry).__name__} {entry!r}")
    unknown = sorted(str(key) for key in entry if key not in _KEYS)
    if unknown:
        _reject(f"{where}: unknown key {', '.join(unknown)} (allowed: {', '.join(_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        _reject(f"{where}: name must be letters, digits, '_', '.' or '-', got {name!r}")
    if _RAW_NAME.match(name):
        _reject(f"{where}: name {name!r} is reserved for undecoded registers")
    where = f"registers[{index}] ({name})"
    register = entry.get("register")
    if not _is_int(register) or not 0 <= register <= 0xFFFF:
        _reject(f"{where}: register must be a whole number 0..65535, got {register!r}")
    unit = entry.get("unit", "")
    if not isinstance(unit, str):
        _reject(f"{where}: unit must be a string, got {unit!r}")
    scale = entry.get("scale", 1)
    if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
        _reject(f"{where}: scale (the divisor) must be a positive number, got {scale!r}")
    if isinstance(scale, float) and scale.is_integer():
        scale = int(scale)
    bits = entry.get("bits", 16)
    if bits not in (16, 32) or isinstance(bits, bool):
        _reject(f"{where}: bits must be 16 or 32, got {bits!r}")
    signed = entry.get("signed", False)
    if not isinstance(signed, bool):
        _reject(f"{where}: signed must be true or false, got {signed!r}")
    kind = entry.get("type", "number")
    if kind not in _TYPES:
        _reject(f"{where}: type must be number or text, got {kind!r}")
    length = entry.get("length")
    if kind == "text":
        if not _is_int(length) or not 1 <= length <= 125:
            _reject(f"{where}: a text needs length, its number of registers "
                             f"(1..125, two characters each), got {length!r}")
        for key in ("scale", "bits", "signed", "unit"):
            if key in entry:
                _reject(f"{where}: {key} makes no sense for a text")
        field = Field(name, register, "", 1, 16, False, length)
    else:
        if length is not None:
            _reject(f"{where}: length is only for type: text (numbers use bits)")
        field = Field(name, register, unit, scale, bits, signed, 0)
    if field.register + field.width > 0x10000:
        _reject(f"{where}: registers {field.register}..{field.register + field.width - 1} "
                         f"run past 65535")
    table = entry.get("table", INPUT)
    if table not in TABLES:
        _reject(f"{where}: table must be {INPUT} (0x04/0x50 data) or {HOLDING} "
                         f"(0x03 announce), got {table!r}")
    families = _families(entry["family"], where) if "family" in entry else None
    return UserField(field, families, table)


def parse_registers(entries):
    """
    Check the C{registers:} list; return a tuple of L{UserField}.
    """
    if entries is None:
        return ()
    if not isinstance(entries, (list, tuple)):
        _reject(f"registers: expected a list of mappings, got {type(entries).__name__}")
    result = [_one_register(index, entry) for index, entry in enumerate(entries)]
    seen = {}
    for index, user in enumerate(result):
        scopes = [None] if user.families is None else sorted(user.families)
        for scope in scopes:
            key = (user.field.name, user.table, scope)
            if key in seen:
                _reject(f"registers[{index}] ({user.field.name}): defined twice for the "
                                 f"same family and table (first at registers[{seen[key]}])")
            seen[key] = index
    return tuple(result)


def _serial_key(key, where):
    if _is_int(key):
        key = str(key)
    if not isinstance(key, str) or not key.strip():
        _reject(f"{where}: keys must be datalogger or inverter serials, got {key!r}")
    return key.strip()


def parse_families(mapping):
    """
    Check the C{families:} mapping (serial -> family); return a dict.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        _reject(f"families: expected a mapping of serial to family, "
                         f"got {type(mapping).__name__}")
    result = {}
    for key, value in mapping.items():
        serial = _serial_key(key, "families")
        family = family_name(value)
        if family is None:
            _reject(f"families.{serial}: unknown family {value!r} "
                             f"(known: {', '.join(FAMILIES)})")
        result[serial] = family
    return result


def parse_dtc_filter(mapping):
    """
    Check the C{dtc_filter:} mapping (device type code -> register numbers
    or value names); return {dtc: frozenset}.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        _reject(f"dtc_filter: expected a mapping of device type code to a list, "
                         f"got {type(mapping).__name__}")
    result = {}
    for key, wanted in mapping.items():
        dtc = key
        if isinstance(dtc, str) and dtc.strip().isdigit():
            dtc = int(dtc.strip())
        if not _is_int(dtc) or not 0 <= dtc <= 0xFFFF:
            _reject(f"dtc_filter: key {key!r} is not a device type code (0..65535)")
        where = f"dtc_filter.{dtc}"
        if not isinstance(wanted, (list, tuple)):
            _reject(f"{where}: expected a list of register numbers or names, got {wanted!r}")
        items = set()
        for item in wanted:
            if (_is_int(item) and 0 <= item <= 0xFFFF) or (isinstance(item, str) and item):
                items.add(item)
            else:
                _reject(f"{where}: {item!r} is neither a register number nor a name")
        result[dtc] = frozenset(items)
    return result


def _input_names(user):
    """
    Every value name a data record can have: the built-in input maps of
    all families and the configured input registers.
    """
    names = {f.name for family in FAMILIES.values() for f in family.fields(INPUT)}
    names.update(u.field.name for u in user if u.table == INPUT)
    return names


def problems(registers=None, dtc_filter=None, families=None):
    """
    Every problem of the three decoding keys at once, for C{grott check}
    and start-up: a list of C{(dotted key, message)}, the message naming
    the entry as the C{parse_*} functions do.  Beyond what those check, a
    C{dtc_filter} name that no family and no configured register has is a
    problem: it would silently extract nothing.
    """
    found = []
    user = ()
    if registers is not None and not isinstance(registers, (list, tuple)):
        found.append(("registers", (f"registers: expected a list of mappings, "
                                    f"got {type(registers).__name__}")))
    elif registers:
        good = []
        for index, entry in enumerate(registers):
            try:
                good.append(_one_register(index, entry))
            except ValueError as e:
                found.append((f"registers[{index}]", str(e)))
        if len(good) == len(registers):
            try:
                user = parse_registers(registers)
            except ValueError as e:
                found.append(("registers", str(e)))
        else:
            user = tuple(good)
    if isinstance(families, dict):
        for key, value in families.items():
            try:
                parse_families({key: value})
            except ValueError as e:
                found.append((f"families.{key}", str(e)))
    else:
        found.extend(_one("families", parse_families, families))
    if isinstance(dtc_filter, dict):
        known = _input_names(user)
        for key, wanted in dtc_filter.items():
            try:
                [dtc] = parse_dtc_filter({key: wanted})
            except ValueError as e:
                found.append((f"dtc_filter.{key}", str(e)))
                continue
            for index, item in enumerate(wanted):
                if isinstance(item, str) and item not in known and not _RAW_NAME.match(item):
                    found.append((f"dtc_filter.{key}[{index}]", (
                        f"dtc_filter.{dtc}: {item!r} is not the name of any register "
                        f"(every name is in docs/registers.md; reg_<n> or a number for others)")))
    else:
        found.extend(_one("dtc_filter", parse_dtc_filter, dtc_filter))
    return found


def _one(key, parse, value):
    try:
        parse(value)
    except ValueError as e:
        return [(key, str(e))]
    return []
