"""
Packets in, records out.

A L{Decoder} is built once from the configuration (extra registers, the
family per serial, the DTC filter) and then decodes any number of packets.
It caches what derives from the configuration and the block layouts seen
(the merged field list per family, one compiled
L{grott.registers.plan.Plan} per layout), and keeps in its
L{DecoderState} what records taught it about each inverter: the DTC of its
last announce (used when the caller passes none) and the family decided for
it, for records that cannot decide alone (an SPF at night).
"""

import types

from grott.codec import RecordType
from grott.registers import userconfig
from grott.registers.blocks import REGISTER_RECORDS, walk
from grott.registers.detect import AMBIGUOUS_45, family_from_layout, resolve_ambiguous
from grott.registers.fields import HOLDING, INPUT
from grott.registers.maps import FAMILIES
from grott.registers.meter import METER_RECORDS, decode_meter, meter_device_id
from grott.registers.plan import compile_plan, word_index
from grott.registers.record import INVERTER, METER, Identification, Record
from grott.registers.state import DecoderState

__all__ = ["DECODED_RECORDS", "Decoder"]

#: Every record type the decoder turns into a L{Record}.
DECODED_RECORDS = REGISTER_RECORDS | METER_RECORDS

#: Compiled plans kept before the cache starts over (a deployment sees a
#: handful of layouts; garbage that happens to walk must not grow memory).
PLAN_CACHE_SIZE = 256

_EMPTY = types.MappingProxyType({})


class Decoder:
    """
    Decode register records (0x03, 0x04, 0x50) and smart-meter records
    (0x20, 0x1b) into L{Record}s.

    @param registers: config C{registers:} list (extra/overriding fields).
    @param dtc_filter: config C{dtc_filter:} mapping.
    @param families: config C{families:} mapping (serial -> family).
    @param state: the L{DecoderState} to learn into (a new one by default).
    @raise ValueError: a configuration entry is wrong; the message says which.
    """

    def __init__(self, registers=(), dtc_filter=None, families=None, state=None):
        #: What records taught this decoder, per inverter.
        self.state = state if state is not None else DecoderState()
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

    def _detect(self, layout, words, dtc, table, key):
        cache_key = (layout, dtc)
        family = self._layouts.get(cache_key)
        if family is None:
            if len(self._layouts) >= PLAN_CACHE_SIZE:
                self._layouts.clear()
            family = self._layouts[cache_key] = family_from_layout(layout, dtc) or ""
        if family == AMBIGUOUS_45:
            if table == HOLDING:
                # Holding values say nothing about classic vs SPF.
                decided = resolve_ambiguous(dtc, lambda register: None)
            else:
                index = word_index(layout)
                decided = resolve_ambiguous(
                    dtc, lambda r: words[index[r]] if r in index else None)
            state = self.state
            if decided is None:
                return state.family(key) or "classic"
            state.remember_family(key, decided)
            return decided
        return family or None

    # ------------------------------------------------------------ decoding

    def decode(self, packet, device_type_code=None):
        """
        Decode C{packet}; None when it carries no register or meter record
        (another record type, or a server's one-byte acknowledgement).

        @param device_type_code: the DTC of the inverter's last announce;
            None: the one this decoder saw announced, if any.
        @raise grott.codec.CodecError: the record does not add up (the
            message says where).
        """
        record_type = packet.record_type
        if len(packet.payload) <= 1:
            return None
        if record_type not in REGISTER_RECORDS:
            if record_type in METER_RECORDS:
                return self._meter(packet)
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
        inverter_serial = body.inverter_serial
        key = (body.datalogger_serial, inverter_serial or packet.device_address)
        if device_type_code is None and not announce:
            device_type_code = self.state.device_type_code(key)
        family = self.override_for(inverter_serial, body.datalogger_serial)
        if family is None:
            dtc_hint = _register(layout, words, 43) if announce else device_type_code
            family = self._detect(layout, words, dtc_hint, table, key)
        identification = None
        selection = None
        if announce:
            identification = self._identify(family, layout, words)
            device_type_code = identification.dtc
            if device_type_code is not None:
                self.state.remember_device_type_code(key, device_type_code)
            if inverter_serial is None:
                inverter_serial = identification.serial
        elif device_type_code in self._dtc_filter:
            selection = device_type_code
        plan = self._plan(family, table, layout, selection)
        values = plan.decode(words) if words else {}
        return Record(body.datalogger_serial, inverter_serial, packet.protocol,
                      int(record_type), packet.device_address, body.timestamp,
                      body.timestamp_raw, record_type == RecordType.BUFFERED_DATA,
                      device_type_code, family, types.MappingProxyType(values),
                      plan.units if words else _EMPTY, blocks, identification, body.warning,
                      INVERTER, inverter_serial or body.datalogger_serial)

    def _meter(self, packet):
        """
        A smart meter's record (0x20 measurements, 0x1b log line).  One
        meter, one device: a 0x1b record takes the device id of its
        datalogger's 0x20 meter when that datalogger's 0x20 records named
        exactly one; else (none seen yet, several meters) its own, from
        the datalogger serial and its device address.
        """
        body = decode_meter(packet.record_type, packet.payload, packet.protocol)
        device_id = meter_device_id(body.datalogger_serial, body.inverter_serial,
                                    packet.device_address)
        if packet.record_type == RecordType.METER_DATA:
            self.state.remember_meter(body.datalogger_serial, device_id)
        else:
            device_id = self.state.meter_of(body.datalogger_serial) or device_id
        return Record(body.datalogger_serial, body.inverter_serial, packet.protocol,
                      int(packet.record_type), packet.device_address, body.timestamp,
                      body.timestamp_raw, False, None, METER, body.values, body.units, (),
                      None, body.warning, METER, device_id)

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
        serial = get("serialnumber")
        if not (serial or "").strip(" \x00"):
            # MOD TL3-XH: 23..27 blank, the serial is in 3001..3015.
            serial = (get("serialnumberlong") or "").strip(" \x00") or serial or None
        tracker_phase = get("trackerphase")
        module = get("modulecode")
        return Identification(
            firmware=get("firmware"),
            control_firmware=get("controlfirmware"),
            serial=serial,
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
