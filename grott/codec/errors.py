"""
The codec's own exceptions.

Everything the codec raises on hostile input is a L{CodecError}, so callers
that relay traffic can catch one type and carry on; an C{IndexError} or
C{struct.error} escaping from here is a bug.
"""


class CodecError(ValueError):
    """
    Base class: the bytes are not what the Growatt protocol allows.
    """


class FramingError(CodecError):
    """
    A header that cannot start a packet (unknown protocol id, impossible
    length).
    """


class PacketError(CodecError):
    """
    A framed packet whose body does not hold what its record type needs.
    """
