"""
Who may hold a datalogger connection: an address in
C{proxy.allowed_networks}, a serial in C{proxy.allowed_serials}, and a
serial not already live on another connection (unless that is plausibly
the same datalogger reconnecting, L{grott.session.takeover_refusal}).

Kept apart from the protocols so the relay reads as a relay; the rules are
a policy of the whole proxy, and so is their log: each refusal is counted
in the registry and logged once per kind, serial and address, so a peer
retrying in a loop cannot flood the log.
"""

import ipaddress

from grott.logs import Logger
from grott.session import takeover_refusal

__all__ = ["Admission"]

#: Refusals remembered for logging each once (then forgotten all at once).
REFUSALS_REMEMBERED = 4096


class Admission:
    """
    The admission rules of one proxy.

    @ivar allowed_serials: a frozenset of serials, or None for any.
    @ivar allowed_networks: a list of L{ipaddress} networks, or None for any
        address.
    """

    log = Logger()

    def __init__(self, registry, clock, allowed_serials=None, allowed_networks=None):
        self.registry = registry
        self.clock = clock
        self.allowed_serials = None if allowed_serials is None else frozenset(allowed_serials)
        self.allowed_networks = None if allowed_networks is None else [
            ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._refused = set()

    def _once(self, key):
        """Whether the refusal C{key} is new (and so logged)."""
        if key in self._refused:
            return False
        if len(self._refused) >= REFUSALS_REMEMBERED:
            self._refused.clear()
        self._refused.add(key)
        return True

    def _refuse(self, session, kind, why):
        if self._once((kind, session.datalogger_serial, session.host)):
            self.log.warn("refusing datalogger {who} from {peer}: {why} (logged once)",
                          who=session.name, serial=session.datalogger_serial,
                          peer=session.peer, why=why)

    def _inNetworks(self, host):
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed_networks)

    def networkAllowed(self, addr):
        """
        Whether C{addr} may connect; a refusal is counted, and logged once
        per address.
        """
        host = getattr(addr, "host", None)
        if self.allowed_networks is None or host is None or self._inNetworks(host):
            return True
        self.registry.rejected += 1
        if self._once(("network", None, host)):
            self.log.warn("refusing datalogger from {peer}: not in proxy.allowed_networks "
                          "(logged once per address)", peer=host)
        return False

    def claim(self, session):
        """
        C{session}'s datalogger serial is now known: claim it for this
        session, closing an older connection of the same datalogger that it
        may replace.

        @return: None, or why C{session} is refused (the caller closes it).
        """
        serial = session.datalogger_serial
        if self.allowed_serials is not None and serial not in self.allowed_serials:
            self._refuse(session, "serial-not-allowed",
                         f"serial {serial} is not in proxy.allowed_serials")
            return f"serial {serial} not allowed"
        registry = self.registry
        old = registry.by_serial(serial)
        if old is not None and old is not session:
            refusal = takeover_refusal(old, session, self.clock.seconds())
            if refusal is not None:
                registry.refused_takeovers += 1
                self._refuse(session, "takeover", f"{serial} is live on {old.peer}: {refusal}")
                return f"refused: {serial} is live on another connection"
        old = registry.claim(session)
        self.log.debug("datalogger {serial} identified on connection from {peer}",
                       serial=serial, peer=session.peer)
        if old is not None:
            self.log.info("datalogger {serial} reconnected from {peer}; closing its "
                          "older connection from {old_peer}",
                          serial=serial, peer=session.peer, old_peer=old.peer)
            old.disconnect("replaced by a newer connection")
        return None
