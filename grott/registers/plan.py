"""
Decode plans: one small Python function per (field list, block layout,
selection), generated once and reused for every record with that layout.

A datalogger sends the same block layout every few minutes for years, so
the work of matching fields to word positions is done once; decoding a
record is then one call that builds the values dict directly from the tuple
of words.  The function is generated source (names through C{repr}, numbers
from validated fields only) so a 2x125-register record costs a few
microseconds instead of a loop over every field.
"""

import struct
import types

from grott.registers.texts import TEXTS

__all__ = ["Plan", "compile_plan", "word_index"]


def _text(words):
    """Two latin-1 characters per register; trailing NULs are padding."""
    return struct.pack(f">{len(words)}H", *words).rstrip(b"\x00").decode("latin-1")


def word_index(layout):
    """
    Register number -> position in the concatenated block values.  A
    register repeated in a later block keeps its first position.
    """
    index = {}
    position = 0
    for start, end in layout:
        for register in range(start, end + 1):
            index.setdefault(register, position)
            position += 1
    return index


def _expression(field, positions):
    if field.is_text:
        return "_text((" + "".join(f"w[{p}], " for p in positions) + "))"
    if field.table is not None:
        # a dict lookup for known codes; the function only for unknown ones
        word = f"w[{positions[0]}]"
        return f"(_words_{field.table}.get({word}) or _texts[{field.table!r}]({word}))"
    if field.bits == 32:
        expr = f"(w[{positions[0]}] << 16 | w[{positions[1]}])"
        if field.signed:
            expr = f"(({expr} ^ 0x80000000) - 0x80000000)"
    else:
        expr = f"w[{positions[0]}]"
        if field.signed:
            expr = f"(({expr} ^ 0x8000) - 0x8000)"
    if field.scale != 1:
        expr = f"{expr} / {field.scale!r}"
    return expr


class Plan:
    """
    A compiled decoder for one layout.  C{decode(words)} returns a new
    values dict; C{units} is shared (read-only) by every record.
    """

    __slots__ = ("decode", "fields", "source", "units")

    def __init__(self, decode, units, fields, source):
        self.decode = decode
        self.units = units
        #: The named fields decoded, in output order.
        self.fields = fields
        self.source = source


def compile_plan(fields, layout, selection=None):
    """
    Compile C{fields} (in output order) for blocks C{layout} ((start, end)
    pairs).

    A field is decoded when all its registers are present; the first field
    of a name wins (later ones are alternates).  Registers no decoded field
    covers come out raw as C{reg_<n>}.  With a C{selection} (register
    numbers and names), only fields whose name or first register is in it,
    and raw registers whose number or C{reg_<n>} name is in it, are kept.
    """
    index = word_index(layout)
    items = []
    units = {}
    used = []
    claimed = set()
    for field in fields:
        if field.name in units:
            continue
        registers = field.registers
        if any(register not in index for register in registers):
            continue
        if selection is not None and field.name not in selection \
                and field.register not in selection:
            continue
        units[field.name] = field.unit
        used.append(field)
        claimed.update(registers)
        items.append((field.name, _expression(field, [index[r] for r in registers])))
    for register in sorted(index):
        if register in claimed:
            continue
        name = f"reg_{register}"
        if selection is not None and register not in selection and name not in selection:
            continue
        items.append((name, f"w[{index[register]}]"))
    body = "".join(f"        {name!r}: {expr},\n" for name, expr in items)
    source = f"def decode(w):\n    return {{\n{body}    }}\n"
    namespace = {"_text": _text, "_texts": TEXTS}
    namespace.update((f"_words_{name}", function.words) for name, function in TEXTS.items())
    exec(compile(source, f"<register plan {layout!r}>", "exec"), namespace)  # noqa: S102
    return Plan(namespace["decode"], types.MappingProxyType(units), tuple(used), source)
