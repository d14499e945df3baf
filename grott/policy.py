"""
What grott lets through from the cloud to the datalogger.

The cloud can read and write inverter and datalogger registers, and in 2024
it re-pointed many dataloggers to other servers by writing datalogger
registers 17-19.  A user who runs grott decides: let everything through
(a proxy should, by default), let the cloud read but not write, or block its
commands entirely; and, whatever the mode, never let it change the server
address unless told to.
"""

from grott.codec import (
    TO_DATALOGGER,
    CodecError,
    ConfigSetRequest,
    InverterWriteMultiRequest,
    InverterWriteRequest,
    RecordType,
    parse_body,
)
from grott.logs import Logger

__all__ = ["SERVER_ADDRESS_REGISTERS", "CloudCommandPolicy"]

#: Datalogger configuration registers that re-point it: IP, port, host name.
SERVER_ADDRESS_REGISTERS = frozenset({17, 18, 19})

_WRITES = frozenset({RecordType.INVERTER_WRITE, RecordType.INVERTER_WRITE_MULTI,
                     RecordType.CONFIG_SET})
_COMMANDS = _WRITES | {RecordType.INVERTER_READ, RecordType.CONFIG_GET}


def describe(packet):
    """
    A short text of what a cloud command asks, for the log.
    """
    try:
        message = parse_body(packet, TO_DATALOGGER)
    except CodecError as e:
        return f"unparsable {packet.record_name} ({e})"
    if isinstance(message, InverterWriteRequest):
        return f"inverter register {message.register} := {message.value}"
    if isinstance(message, InverterWriteMultiRequest):
        return f"inverter registers {message.first}..{message.last} := {list(message.values)}"
    if isinstance(message, ConfigSetRequest):
        return f"datalogger register {message.register} := {message.text!r}"
    return f"{packet.record_name} registers {message.first}..{message.last}"


class CloudCommandPolicy:
    """
    Judges each packet the cloud sends to a datalogger.

    L{judge} returns C{None} to let a packet through, or the reason it is
    dropped.  L{redirects} tells whether a packet would change the
    datalogger's server address (logged at warn level in every mode).
    """

    log = Logger()

    def __init__(self, mode="allow", protect_server_address=True):
        self.mode = mode
        self.protect_server_address = protect_server_address

    def redirects(self, packet):
        if packet.record_type != RecordType.CONFIG_SET:
            return False
        try:
            message = parse_body(packet, TO_DATALOGGER)
        except CodecError:
            return False
        return message.register in SERVER_ADDRESS_REGISTERS

    def judge(self, packet):
        kind = packet.record_type
        if kind not in _COMMANDS:
            return None
        if self.mode == "block":
            return "proxy.cloud_commands is block"
        if self.mode == "read-only" and kind in _WRITES:
            return "proxy.cloud_commands is read-only"
        if self.protect_server_address and self.redirects(packet):
            return "proxy.protect_server_address is on"
        return None

    def drops(self, packet, session):
        """
        Judge C{packet} on its way to C{session}'s datalogger, and say so in
        the log: True when it is dropped (counted in the session).  A change
        of the server address is a warning whether or not it is let through.
        """
        redirect = self.redirects(packet)
        reason = self.judge(packet)
        if reason is None:
            if redirect:
                self.log.warn("datalogger {who}: the cloud changes the server address: "
                              "{command} (let through: proxy.protect_server_address is off)",
                              who=session.name, serial=session.datalogger_serial,
                              command=describe(packet))
            return False
        session.commands_dropped += 1
        log = self.log.warn if redirect else self.log.info
        log("datalogger {who}: dropped a cloud command, {command}, because {reason}",
            who=session.name, serial=session.datalogger_serial,
            command=describe(packet), reason=reason)
        return True
