"""
The XOR "scrambling" of protocols 5 and 6.

Every body byte is XOR-ed with the repeating key C{b"Growatt"}, the key
restarting at the first body byte; XOR is its own inverse, so one function
serves both directions.  The XOR is done on one big integer rather than byte
by byte, which keeps a 577-byte body at about a microsecond.
"""

KEY = b"Growatt"

_keystreams = {}


def _keystream(length):
    stream = _keystreams.get(length)
    if stream is None:
        repeated = (KEY * (length // len(KEY) + 1))[:length]
        stream = int.from_bytes(repeated, "big")
        if length <= 4096:
            _keystreams[length] = stream
    return stream


def scramble(body):
    """
    Return C{body} XOR-ed with the repeating key (scramble = unscramble).
    """
    length = len(body)
    if not length:
        return b""
    return (int.from_bytes(body, "big") ^ _keystream(length)).to_bytes(length, "big")


unscramble = scramble
