"""
One named register value: where it sits and how its words become a number
or a text.

Conventions (protocol.md section 10): registers are unsigned 16-bit words;
a 32-bit value takes two registers, high word first; "signed" is two's
complement over the full width; C{scale} is the divisor applied to the raw
integer (0.1 V steps have scale 10); a text of C{length} registers holds two
latin-1 characters per register, trailing NULs dropped; a field with a
C{table} publishes the words of L{grott.registers.texts} for its code (a
status or fault code as text, beside the number under another name).
"""

import typing

__all__ = ["HOLDING", "INPUT", "TABLES", "Field", "code_text", "s16", "s32", "text", "u16", "u32"]

#: Input registers: measurements, carried by 0x04 and 0x50 records.
INPUT = "input"
#: Holding registers: settings and identification, carried by 0x03 announces.
HOLDING = "holding"
TABLES = (INPUT, HOLDING)


class Field(typing.NamedTuple):
    name: str
    register: int
    unit: str = ""
    #: Divisor; an int keeps unscaled values integers.
    scale: float = 1
    bits: int = 16
    signed: bool = False
    #: Registers of text; 0 for a number.
    length: int = 0
    #: Name of a code-to-text table (L{grott.registers.texts.TEXTS}), or None.
    table: object = None

    @property
    def is_text(self):
        return self.length > 0

    @property
    def width(self):
        """How many registers the value occupies."""
        return self.length if self.length else self.bits // 16

    @property
    def registers(self):
        return range(self.register, self.register + self.width)

    def describe(self):
        """A short human description of the encoding, for documentation."""
        if self.is_text:
            return f"text, {self.length} registers"
        if self.table is not None:
            return f"text of the code ({self.table.replace('_', ' ')} table)"
        kind = f"{'signed' if self.signed else 'unsigned'} {self.bits}-bit"
        return kind if self.scale == 1 else f"{kind} / {self.scale}"


def u16(name, register, unit="", scale=1):
    return Field(name, register, unit, scale, 16, False)


def s16(name, register, unit="", scale=1):
    return Field(name, register, unit, scale, 16, True)


def u32(name, register, unit="", scale=1):
    return Field(name, register, unit, scale, 32, False)


def s32(name, register, unit="", scale=1):
    return Field(name, register, unit, scale, 32, True)


def text(name, register, length):
    return Field(name, register, "", 1, 16, False, length)


def code_text(name, register, table):
    """The code in C{register} as the words of C{table}."""
    return Field(name, register, "", 1, 16, False, 0, table)
