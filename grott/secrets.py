"""
Which configuration values are secrets, and how they are kept out of logs.

A secret is found by where it sits, not by its type: a dataclass field
marked secret (C{repr=False}: C{outputs.mqtt.password}, C{command.token}),
in free-form mappings (plugin settings) a key named like a password, token
or key (C{password}, C{passwd}, C{pwd}, C{secret}, C{token}, C{key},
C{api_key}...), and the password of any C{scheme://user:password@host} URL
or DSN anywhere (and of C{password=...} in keyword DSNs and query strings).  Whatever its YAML type, a secret is its text form: a
numeric password 90210417 is masked as "90210417".

A secret shorter than L{MIN_LENGTH} is not masked: masking "x" would
replace every x in every log line and make the log useless while hiding
little.  It is reported as weak instead (L{secret_warnings}), as is a
configuration file holding secrets that other users can read.
"""

import dataclasses
import os
import re
import stat
from urllib.parse import unquote

__all__ = [
    "MASK",
    "MIN_LENGTH",
    "Secrets",
    "find_secrets",
    "is_secret_key",
    "secret_warnings",
    "secrets_in",
]

MASK = "********"
#: Shorter secrets are not masked (and are reported as weak).
MIN_LENGTH = 6

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "pass", "passphrase", "secret",
                           "secrets", "token", "key", "apikey", "credential", "credentials"})
_SECRET_ENDINGS = ("password", "passwd", "pwd", "secret", "token", "apikey", "privatekey",
                   "accesskey", "secretkey")
#: scheme://user:password@ (URLs and DSNs); the password may be empty.
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:([^/@\s]*)@")
#: password=... in keyword DSNs ("host=db password=x"), ODBC strings and
#: query strings.
_KEYWORD = re.compile(r"(?:^|[\s;&?])(?:password|passwd|pwd)=([^\s;&]+)", re.IGNORECASE)


def is_secret_key(name):
    """
    Whether a free-form setting named C{name} holds a secret: one of its
    words (split at C{_ - .} and camelCase) is C{password}, C{pwd}, C{key},
    C{token}... or ends like one (C{mqttpassword}, C{apikey}).
    """
    if not isinstance(name, str):
        return False
    words = [w.lower() for w in _WORDS.findall(name)]
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS) for w in words)


def _text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def find_secrets(config):
    """
    Every secret in C{config} (a L{grott.config.Config}, a section, or parsed
    YAML) as (dotted key, text) pairs, short ones included.
    """
    found = []

    def walk(value, key, secret, depth):
        if depth > 20:
            return
        text = _text(value)
        if text is not None:
            if secret and text:
                found.append((key, text))
            if isinstance(value, str):
                for pattern in (_USERINFO, _KEYWORD):
                    for match in pattern.finditer(value):
                        password = match.group(1)
                        for form in {password, unquote(password)}:
                            if form:
                                found.append((f"{key} (URL password)", form))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                if f.name != "source":
                    walk(getattr(value, f.name, None), _join(key, f.name),
                         secret or not f.repr, depth + 1)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, _join(key, str(k)), secret or is_secret_key(k), depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]", secret, depth + 1)

    walk(config, "", False, 0)
    return found


def _join(key, name):
    return f"{key}.{name}" if key else name


def secrets_in(config):
    """
    The secret texts in C{config} long enough to be masked.
    """
    return frozenset(text for _, text in find_secrets(config) if len(text) >= MIN_LENGTH)


def secret_warnings(config, path=None):
    """
    Sentences about secrets in C{config} that the log cannot protect: ones
    too short to mask (weak), and a configuration file at C{path} (default
    C{config.source}) that users other than its owner can read.  Never
    contains a secret.
    """
    found = find_secrets(config)
    warnings = []
    weak = sorted({key for key, text in found if len(text) < MIN_LENGTH})
    for key in weak:
        warnings.append(f"{key}: shorter than {MIN_LENGTH} characters: a weak secret, "
                        "and too short to be masked in the log")
    path = getattr(config, "source", None) if path is None else path
    if found and path and os.path.isfile(path):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            keys = ", ".join(sorted({key for key, _ in found}))
            who = " and ".join(w for w, bit in (("its group", stat.S_IRGRP),
                                                ("other users", stat.S_IROTH)) if mode & bit)
            warnings.append(f"readable by {who} (mode {mode:04o}) and holds secrets "
                            f"({keys}): chmod 600 {path}")
    return warnings


class Secrets:
    """
    The texts to mask in log events, longest first so a secret that
    contains another is masked whole.  Texts shorter than L{MIN_LENGTH} are
    left out (see the module docstring).
    """

    def __init__(self, values=()):
        self.values = tuple(sorted({v for v in values if isinstance(v, str)
                                    and len(v) >= MIN_LENGTH}, key=len, reverse=True))
        self._encoded = tuple(v.encode("utf-8") for v in self.values)

    def __bool__(self):
        return bool(self.values)

    def union(self, values):
        return Secrets(self.values + tuple(values))

    def found_in(self, text):
        return any(secret in text for secret in self.values)

    def found_in_bytes(self, data):
        return any(secret in data for secret in self._encoded)

    def mask(self, text):
        for secret in self.values:
            text = text.replace(secret, MASK)
        return text
