"""
Packets in, records out.

A L{Decoder} is built once from the configuration (extra registers, the
family per serial, the DTC filter) and then decodes any number of packets
without remembering anything about them: the caller keeps the DTC of each
inverter's last announce and passes it in.  What it does cache is derived
from the configuration and the block layouts seen: the merged field list
per family and one compiled L{grott.registers.plan.Plan} per layout.
"""

import types

from grott.codec import RecordType
from grott.registers import userconfig
from grott.registers.blocks import REGISTER_RECORDS, walk
from grott.registers.detect import AMBIGUOUS_45, family_from_layout, resolve_ambiguous
from grott.registers.fields import HOLDING, INPUT
from grott.registers.maps import FAMILIES
from grott.registers.plan import compile_plan, word_index
from grott.registers.record import Identification, Record

__all__ = ["Decoder"]

#: Compiled plans kept before the cache starts over (a deployment sees a
#: handful of layouts; garbage that happens to walk must not grow memory).
PLAN_CACHE_SIZE = 256

_EMPTY = types.MappingProxyType({})


class Decoder:
    """
    Decode register records (0x03, 0x04, 0x50) into L{Record}s.

    @param registers: config C{registers:} list (extra/overriding fields).
    @param dtc_filter: config C{dtc_filter:} mapping.
    @param families: config C{families:} mapping (serial -> family).
    @raise ValueError: a configuration entry is wrong; the message says which.
    """

    def __init__(self, registers=(), dtc_filter=None, families=None):
        self._user = userconfig.parse_registers(registers)
        self._dtc_filter = userconfig.parse_dtc_filter(dtc_filter)
        self._overrides = userconfig.parse_families(families)
        self._fields = {}
        self._plans = {}
        self._layouts = {}
        self._identify_plans = {}

    # ------------------------------------------------------------ maps

    def fields(self, family, table):
        """
        The fields decoded for C{family} (None: unknown) and C{table}:
        the built-in map with the configured ones merged in.  A configured
        field replaces every built-in field of the same name; others are
        added after the built-ins.
        """
        key = (family, table)
        fields = self._fields.get(key)
        if fields is None:
            builtin = FAMILIES[family].fields(table) if family is not None else ()
            user = [u.field for u in self._user if u.applies_to(family, table)]
            replaced = {field.name for field in user}
            fields = tuple(f for f in builtin if f.name not in replaced) + tuple(user)
            self._fields[key] = fields
        return fields

    def _plan(self, family, table, layout, selection_key):
        key = (family, table, layout, selection_key)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            selection = self._dtc_filter[selection_key] if selection_key is not None else None
            plan = compile_plan(self.fields(family, table), layout, selection)
            self._plans[key] = plan
        return plan

    def override_for(self, inverter_serial, datalogger_serial):
        """The configured family for these serials (inverter first), or None."""
        overrides = self._overrides
        if not overrides:
            return None
        return overrides.get(inverter_serial) or overrides.get(datalogger_serial)

    def _detect(self, layout, words, dtc, table):
        key = (layout, dtc)
        family = self._layouts.get(key)
        if family is None:
            if len(self._layouts) >= PLAN_CACHE_SIZE:
                self._layouts.clear()
            family = self._layouts[key] = family_from_layout(layout, dtc) or ""
        if family == AMBIGUOUS_45:
            if table == HOLDING:
                # Holding values say nothing about classic vs SPF.
                return resolve_ambiguous(dtc, lambda register: None)
            index = word_index(layout)
            family = resolve_ambiguous(dtc, lambda r: words[index[r]] if r in index else None)
        return family or None

    # ------------------------------------------------------------ decoding

    def decode(self, packet, device_type_code=None):
        """
        Decode C{packet}; None when it carries no register record (another
        record type, or a server's one-byte acknowledgement).

        @param device_type_code: the DTC of the inverter's last announce.
        @raise grott.registers.blocks.BlockError: the blocks do not add up.
        """
        record_type = packet.record_type
        if record_type not in REGISTER_RECORDS or len(packet.payload) <= 1:
            return None
        body = walk(packet.payload, packet.protocol)
        blocks = body.blocks
        if len(blocks) == 1:
            words = blocks[0].values
        else:
            words = ()
            for block in blocks:
                words += block.values
        layout = body.layout
        announce = record_type == RecordType.ANNOUNCE
        table = HOLDING if announce else INPUT
        family = self.override_for(body.inverter_serial, body.datalogger_serial)
        if family is None:
            dtc_hint = _register(layout, words, 43) if announce else device_type_code
            family = self._detect(layout, words, dtc_hint, table)
        identification = None
        selection = None
        if announce:
            identification = self._identify(family, layout, words)
            device_type_code = identification.dtc
        elif device_type_code in self._dtc_filter:
            selection = device_type_code
        plan = self._plan(family, table, layout, selection)
        values = plan.decode(words) if words else {}
        return Record(body.datalogger_serial, body.inverter_serial, packet.protocol,
                      int(record_type), packet.device_address, body.timestamp,
                      body.timestamp_raw, record_type == RecordType.BUFFERED_DATA,
                      device_type_code, family, types.MappingProxyType(values),
                      plan.units if words else _EMPTY, blocks, identification, body.warning)

    def _identify(self, family, layout, words):
        """
        Identification from the built-in holding map (the configuration's
        fields do not change what an inverter is).
        """
        if family is None or not words:
            return Identification(None, None, None, None, None, None, None, None, None, None)
        key = (family, layout)
        plan = self._identify_plans.get(key)
        if plan is None:
            if len(self._identify_plans) >= PLAN_CACHE_SIZE:
                self._identify_plans.clear()
            plan = self._identify_plans[key] = compile_plan(FAMILIES[family].holding, layout)
        values = plan.decode(words)
        get = values.get
        tracker_phase = get("trackerphase")
        module = get("modulecode")
        return Identification(
            firmware=get("firmware"),
            control_firmware=get("controlfirmware"),
            serial=get("serialnumber"),
            manufacturer=get("manufacturer"),
            module_code=f"0x{module:08x}" if module is not None else None,
            rated_power=get("ratedpower"),
            dtc=get("devicetypecode"),
            trackers=tracker_phase >> 8 if tracker_phase is not None else None,
            phases=tracker_phase & 0xFF if tracker_phase is not None else None,
            modbus_version=get("modbusversion"),
        )


def _register(layout, words, register):
    position = 0
    for start, end in layout:
        if start <= register <= end:
            return words[position + register - start]
        position += end - start + 1
    return None
