"""
Records to JSON bytes: orjson when it is installed (several times faster),
the standard library otherwise.  Both give compact UTF-8, write an enum as
its value and anything else JSON does not know (a date) as its string form.
"""

import enum
import json

try:
    import orjson
except ImportError:
    orjson = None

__all__ = ["dumps", "encoder", "line"]


def _default(obj):
    if isinstance(obj, enum.Enum):
        return obj.value
    return str(obj)


def encoder(orjson_module=orjson):
    """
    A C{dumps(obj) -> bytes} using C{orjson_module}, or C{json} if None.
    """
    if orjson_module is not None:
        def dumps(obj, _dumps=orjson_module.dumps):
            return _dumps(obj, default=_default)
        return dumps
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                              default=_default).encode

    def dumps(obj):
        return encode(obj).encode("utf-8")
    return dumps


dumps = encoder()


def line(obj, dumps=dumps):
    """
    One JSON line: the object's JSON, then a newline.
    """
    return dumps(obj) + b"\n"
