"""
Which grott this is, when several share one MQTT broker behind HAProxy.

Every instance names itself in its logs, its stats and the retained
per-datalogger status message, so an operator (or a control client) can
tell which process holds a datalogger.  The default, host name plus the
datalogger port, is unique per machine without any configuration and stays
the same across restarts, so a dashboard keyed on it does not reset.
"""

import re
import socket

__all__ = ["instance_id", "listen_port"]

# A positional port right after the endpoint type ("tcp:5279"), or a port=
# argument anywhere ("tcp:interface=::1:port=5279").
_PORT = re.compile(r"(?:^|:)port=(\d+)(?::|$)")


def listen_port(description):
    """
    The port (or UNIX socket path) a server endpoint string listens on, as
    text; None when it cannot be told.  Wrappers such as C{haproxy:} are
    looked through.
    """
    found = _PORT.search(description)
    if found:
        return found.group(1)
    parts = description.split(":")
    while parts and parts[0] in ("haproxy",):
        parts = parts[1:]
    if len(parts) >= 2:
        if parts[0] in ("tcp", "tcp6", "ssl", "tls") and parts[1].isdigit():
            return parts[1]
        if parts[0] == "unix":
            return parts[1].split("/")[-1] or None
    return None


def instance_id(config, hostname=socket.gethostname):
    """
    C{instance.id} from C{config}, or host name plus listening port.
    """
    if config.instance.id:
        return config.instance.id
    port = listen_port(config.proxy.listen)
    host = hostname() or "grott"
    return f"{host}:{port}" if port else host
