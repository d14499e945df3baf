"""
What a simulated inverter knows: its register tables and how they change.

The simulator (L{grott.testing.simulator}) needs records that a decoder, a proxy and
a benchmark can take for real ones: the block layout of a real family (the
proxy detects the family from it), identification registers in the announce
(firmware, inverter serial, device type code in holding register 43) and
measurements that behave like a plant's (power follows the sun, energy
counters only grow, today's energy restarts at local midnight).  Values come
from a seeded generator, so a test that fixes the serial and the start time
gets the same bytes every run.

No Twisted here: time is handed in as epoch seconds by the caller.
"""

import calendar
import dataclasses
import math
import random
import struct
import time

from grott.registers.blocks import encode_register_record

__all__ = ["FAMILIES", "Family", "SimulatedInverter", "SimulatedMeter", "blocks_of", "family",
           "register_payload"]


@dataclasses.dataclass(frozen=True)
class Family:
    """
    One inverter family as the datalogger reports it.

    @ivar holding_blocks: (first, last) ranges sent in the announce (0x03).
    @ivar input_blocks: (first, last) ranges sent as live/buffered data.
    @ivar fields: measurement name -> (input register, bits); see
        L{SimulatedInverter.measure} for the names.
    @ivar dtc: value of holding register 43 (the device type code on v1.2x
        families; classic inverters put an unrelated number there).
    """

    name: str
    holding_blocks: tuple
    input_blocks: tuple
    fields: dict
    dtc: int
    firmware: str
    control_firmware: str
    trackers_phases: int
    modbus_version: int
    identity: str = "classic"


_CLASSIC_FIELDS = {
    "status": (0, 16), "ppv": (1, 32),
    "vpv1": (3, 16), "ipv1": (4, 16), "ppv1": (5, 32),
    "vpv2": (7, 16), "ipv2": (8, 16), "ppv2": (9, 32),
    "pac": (11, 32), "fac": (13, 16), "vac1": (14, 16), "iac1": (15, 16), "pac1": (16, 32),
    "eac_today": (26, 32), "eac_total": (28, 32), "worktime": (30, 32),
    "temperature": (32, 16), "ipm_temperature": (41, 16),
    "pbus": (42, 16), "nbus": (43, 16),
    "epv1_today": (48, 32), "epv1_total": (50, 32),
    "epv2_today": (52, 32), "epv2_total": (54, 32), "epv_total": (56, 32),
}

_MIN_FIELDS = {
    "status": (3000, 16), "ppv": (3001, 32),
    "vpv1": (3003, 16), "ipv1": (3004, 16), "ppv1": (3005, 32),
    "vpv2": (3007, 16), "ipv2": (3008, 16), "ppv2": (3009, 32),
    "psystem": (3019, 32), "pac": (3023, 32), "fac": (3025, 16),
    "vac1": (3026, 16), "iac1": (3027, 16), "pac1": (3028, 32),
    "worktime": (3047, 32), "eac_today": (3049, 32), "eac_total": (3051, 32),
    "epv_total": (3053, 32), "epv1_today": (3055, 32), "epv1_total": (3057, 32),
    "epv2_today": (3059, 32), "epv2_total": (3061, 32), "epv_today": (3083, 32),
    "iso": (3087, 16), "bus": (3092, 16),
    "temperature": (3093, 16), "ipm_temperature": (3094, 16), "boost_temperature": (3095, 16),
    "pbus": (3098, 16), "nbus": (3099, 16), "pf": (3100, 16),
}

_STORAGE_FIELDS = {
    # protocol II v1.2x "first group" input registers 0-124 (§10.2)
    "status": (0, 16), "ppv": (1, 32),
    "vpv1": (3, 16), "ipv1": (4, 16), "ppv1": (5, 32),
    "vpv2": (7, 16), "ipv2": (8, 16), "ppv2": (9, 32),
    "pac": (35, 32), "fac": (37, 16), "vac1": (38, 16), "iac1": (39, 16), "pac1": (40, 32),
    "eac_today": (53, 32), "eac_total": (55, 32), "worktime": (57, 32),
    "epv1_today": (59, 32), "epv1_total": (61, 32),
    "epv2_today": (63, 32), "epv2_total": (65, 32), "epv_total": (91, 32),
    "temperature": (93, 16), "ipm_temperature": (94, 16),
    "pbus": (98, 16), "nbus": (99, 16),
}

#: Holding values a fresh storage inverter starts with (stop SOCs, rates).
_STORAGE_SETTINGS = {1070: 100, 1071: 10, 1090: 100, 1091: 100}

FAMILIES = {
    # Classic string inverters on the old RTU protocol: 45-register blocks
    # (grott-p6-0103-classic, grott-p6-0104-classic).
    "classic": Family(
        name="classic", holding_blocks=((0, 44), (45, 89)), input_blocks=((0, 44), (45, 89)),
        fields=_CLASSIC_FIELDS, dtc=134, firmware="G.1.8", control_firmware="\x1e" * 6,
        trackers_phases=0x0101, modbus_version=0, identity="classic"),
    # MIN / TL-X: 125-register blocks, input 3000-3249 (the 585-byte
    # protocol-6 record of grott-p6-0104-min-xdavidx93-a), DTC 5100.
    "min": Family(
        name="min", holding_blocks=((0, 124), (3000, 3124)),
        input_blocks=((3000, 3124), (3125, 3249)),
        fields=_MIN_FIELDS, dtc=5100, firmware="AL1.0", control_firmware="ZABA11",
        trackers_phases=0x0201, modbus_version=305, identity="v12x"),
    # Storage SPH: holding and input 0-124 and 1000-1124 (the block ranges
    # grott.registers.detect takes for storage), DTC 3601 (seen on an SPH).
    "storage": Family(
        name="storage", holding_blocks=((0, 124), (1000, 1124)),
        input_blocks=((0, 124), (1000, 1124)),
        fields=_STORAGE_FIELDS, dtc=3601, firmware="RA1.0", control_firmware="ZBDC11",
        trackers_phases=0x0201, modbus_version=305, identity="v12x"),
}
FAMILIES["tlx"] = FAMILIES["min"]
FAMILIES["sph"] = FAMILIES["storage"]


def family(name):
    """
    The L{Family} called C{name}; ValueError names the known ones.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown inverter family {name!r} (known: {', '.join(sorted(FAMILIES))})") from None


def _text_words(text, count):
    """
    ASCII text as big-endian register words, space-padded (as inverters do).
    """
    raw = text.encode("latin-1")[:2 * count].ljust(2 * count, b" ")
    return list(struct.unpack(f">{count}H", raw))


def _clip32(value):
    return max(0, min(0xFFFFFFFF, round(value)))


def _clip16(value):
    return max(0, min(0xFFFF, round(value)))


class SimulatedInverter:
    """
    The register tables of one inverter and a plausible plant behind them.

    @ivar holding: holding register -> value (what 0x05/0x06/0x10 see).
    @ivar inputs: input register -> value, refreshed by L{update}.
    """

    def __init__(self, serial, family_name="classic", *, seed=None, peak_watts=None,
                 utc_offset=0, device_address=1):
        self.serial = serial
        self.family = family(family_name)
        self.utc_offset = utc_offset
        self._random = random.Random(serial if seed is None else seed)
        self.peak = peak_watts or self._random.randrange(2000, 6000, 100)
        # Share of the peak reached under the current sky; drifts slowly.
        self._sky = self._random.uniform(0.6, 1.0)
        self._last = None
        self._day = None
        self.energy_total = self._random.uniform(500.0, 20000.0)  # kWh
        self.energy_today = 0.0
        self.pv_total = [self.energy_total * 0.52, self.energy_total * 0.5]
        self.pv_today = [0.0, 0.0]
        self.worktime = self._random.uniform(1e6, 4e7)  # seconds
        self.holding = {}
        for first, last in self.family.holding_blocks:
            for register in range(first, last + 1):
                self.holding[register] = 0
        #: seconds the inverter's own clock (holding 45-50) is ahead
        self.clock_skew = 0.0
        self._identify(device_address)
        self.inputs = {}
        # The same values as per-block word lists, so a record is built
        # without a dictionary lookup per register.
        self._words = []
        self._slots = {}
        for first, last in self.family.input_blocks:
            words = [0] * (last - first + 1)
            self._words.append((first, words))
            for register in range(first, last + 1):
                self.inputs[register] = 0
                self._slots[register] = (words, register - first)
        self.measure = {}

    def _identify(self, device_address):
        h = self.holding
        fam = self.family
        h[0] = 1 if fam.identity == "v12x" else 257
        h[3] = 100
        rated = self.peak * 10  # holding 6-7: rated power, 0.1 W
        h[6], h[7] = rated >> 16, rated & 0xFFFF
        for offset, word in enumerate(_text_words(fam.firmware, 3)):
            h[9 + offset] = word
        for offset, word in enumerate(_text_words(fam.control_firmware, 3)):
            h[12 + offset] = word
        for offset, word in enumerate(_text_words(self.serial, 5)):
            h[23 + offset] = word
        h[30] = device_address
        for offset, word in enumerate(_text_words("   PV Inverter  ", 8)):
            h[34 + offset] = word
        h[43] = fam.dtc
        h[44] = fam.trackers_phases
        if fam.name == "storage":
            h.update(_STORAGE_SETTINGS)
        if fam.identity == "v12x":
            h[88] = fam.modbus_version
            if 3001 in h:
                for offset, word in enumerate(_text_words(self.serial.ljust(30, "0"), 15)):
                    h[3001 + offset] = word

    def local_time(self, epoch):
        """
        The inverter's wall clock at C{epoch} as a C{time.struct_time}.
        """
        return time.gmtime(epoch + self.utc_offset)

    def write(self, first, values, epoch):
        """
        Store C{values} from holding register C{first}, as one Modbus write:
        all or nothing.  A write to the v1.2x clock (45-50) sets the clock.

        @return: False (and nothing changed) if a register does not exist.
        """
        registers = range(first, first + len(values))
        if any(r not in self.holding for r in registers):
            return False
        for register, value in zip(registers, values):
            self.holding[register] = value
        if self.family.identity == "v12x" and any(45 <= r <= 50 for r in registers):
            h = self.holding
            try:
                wanted = calendar.timegm((h[45], h[46], h[47], h[48], h[49], h[50], 0, 0, 0))
            except (OverflowError, ValueError):
                return True
            self.clock_skew = wanted - (epoch + self.utc_offset)
        return True

    def holding_snapshot(self, epoch):
        """
        The holding table, with the v1.2x clock registers 45-50 set to now.
        """
        if self.family.identity == "v12x":
            t = self.local_time(epoch + self.clock_skew)
            for register, value in zip(range(45, 51), (t.tm_year, t.tm_mon, t.tm_mday,
                                                       t.tm_hour, t.tm_min, t.tm_sec)):
                if register in self.holding:
                    self.holding[register] = value
        return self.holding

    def _sun(self, epoch):
        """
        Clear-sky share of the peak: zero at night, a smooth hump 06:00-20:00.
        """
        t = self.local_time(epoch)
        hour = t.tm_hour + t.tm_min / 60 + t.tm_sec / 3600
        if not 6.0 < hour < 20.0:
            return 0.0
        return math.sin(math.pi * (hour - 6.0) / 14.0) ** 2

    def update(self, epoch):
        """
        Move the plant forward to C{epoch}: new power, integrated energy.
        """
        day = self.local_time(epoch)[:3]
        if self._day is not None and day != self._day:
            self.energy_today = 0.0
            self.pv_today = [0.0, 0.0]
        self._day = day
        rnd = self._random
        self._sky = min(1.0, max(0.2, self._sky + rnd.uniform(-0.08, 0.08)))
        ppv = self.peak * self._sun(epoch) * self._sky
        share = 0.5 + rnd.uniform(-0.05, 0.05)
        pstr = (ppv * share, ppv * (1 - share))
        pac = ppv * 0.965
        elapsed = 0.0 if self._last is None else max(0.0, epoch - self._last)
        self._last = epoch
        if elapsed:
            kwh = pac * elapsed / 3.6e6
            self.energy_today += kwh
            self.energy_total += kwh
            for i in (0, 1):
                pv_kwh = pstr[i] * elapsed / 3.6e6
                self.pv_today[i] += pv_kwh
                self.pv_total[i] += pv_kwh
            if ppv > 0:
                self.worktime += elapsed
        producing = ppv > 1.0
        vpv = [(330.0 + rnd.uniform(-25, 25)) if producing else rnd.uniform(0, 5) for _ in (0, 1)]
        vac = 230.0 + rnd.uniform(-3, 3)
        self.measure = m = {
            "status": 1 if producing else 0,
            "ppv": ppv * 10, "psystem": pac * 10, "pac": pac * 10, "pac1": pac * 10,
            "vpv1": vpv[0] * 10, "ipv1": (pstr[0] / vpv[0] if producing else 0) * 10,
            "ppv1": pstr[0] * 10,
            "vpv2": vpv[1] * 10, "ipv2": (pstr[1] / vpv[1] if producing else 0) * 10,
            "ppv2": pstr[1] * 10,
            "fac": (50.0 + rnd.uniform(-0.05, 0.05)) * 100,
            "vac1": vac * 10, "iac1": pac / vac * 10,
            "eac_today": self.energy_today * 10, "eac_total": self.energy_total * 10,
            "epv_today": sum(self.pv_today) * 10, "epv_total": sum(self.pv_total) * 10,
            "epv1_today": self.pv_today[0] * 10, "epv1_total": self.pv_total[0] * 10,
            "epv2_today": self.pv_today[1] * 10, "epv2_total": self.pv_total[1] * 10,
            "worktime": self.worktime * 2,
            "temperature": (24.0 + 22.0 * ppv / self.peak) * 10,
            "ipm_temperature": (26.0 + 28.0 * ppv / self.peak) * 10,
            "boost_temperature": (25.0 + 20.0 * ppv / self.peak) * 10,
            "pbus": 3600 + rnd.randrange(0, 40), "nbus": 3600 + rnd.randrange(0, 40),
            "bus": 7200 + rnd.randrange(0, 80), "iso": 3000, "pf": 10000,
        }
        for name, (register, bits) in self.family.fields.items():
            value = m.get(name, 0)
            if bits == 32:
                raw = _clip32(value)
                self._set_input(register, raw >> 16)
                self._set_input(register + 1, raw & 0xFFFF)
            else:
                self._set_input(register, _clip16(value))
        return self.inputs

    def _set_input(self, register, value):
        self.inputs[register] = value
        words, index = self._slots[register]
        words[index] = value

    def input_blocks(self):
        """
        (first, values) per input block, as of the last L{update}.
        """
        return [(first, tuple(words)) for first, words in self._words]


class SimulatedMeter:
    """
    A three-phase smart meter at the grid connection of a simulated
    inverter: the house draws a wandering load, the inverter's output
    covers part of it, the rest is imported (or the surplus exported).
    L{words} gives the 32-bit values of a 0x20 record in Grott's T060120
    order (L{grott.registers.meter.METER_VALUE_FIELDS}), L{log_text} the
    same reading as a 0x1b log line in an SDM630's order
    (L{grott.registers.meter.METER_LOG_FIELDS}).
    """

    def __init__(self, inverter):
        self.inverter = inverter
        self._random = random.Random(f"{inverter.serial}-meter")
        self.load = self._random.uniform(300.0, 1500.0)
        self.imported = self._random.uniform(1000.0, 9000.0)  # kWh
        self.exported = self._random.uniform(500.0, 5000.0)
        self._last = None
        self._words = None

    def words(self, epoch):
        """
        Move to C{epoch} (after the inverter's L{SimulatedInverter.update})
        and return the raw words of one meter data record.
        """
        rnd = self._random
        self.load = min(6000.0, max(150.0, self.load + rnd.uniform(-150.0, 150.0)))
        net = self.load - self.inverter.measure.get("pac", 0.0) / 10.0
        elapsed = 0.0 if self._last is None else max(0.0, epoch - self._last)
        self._last = epoch
        if net > 0:
            self.imported += net * elapsed / 3.6e6
        else:
            self.exported += -net * elapsed / 3.6e6
        volts = [230.0 + rnd.uniform(-3, 3) for _ in range(3)]
        powers = [net / 3.0 + rnd.uniform(-20, 20) for _ in range(3)]
        powers[2] = net - powers[0] - powers[1]
        amps = [abs(p) / v for p, v in zip(powers, volts)]
        apparent = [max(abs(p), v * a) for p, v, a in zip(powers, volts, amps)]

        def tenths(values):
            return [round(v * 10) for v in values]

        pf = [round(1000 * (p / a if a else 1.0)) for p, a in zip(powers, apparent)]
        total_pf = round(1000 * (net / sum(apparent) if sum(apparent) else 1.0))
        line = [v * math.sqrt(3) for v in volts]
        self._words = [
            *tenths(volts), *tenths(amps), *tenths(powers), *tenths(apparent),
            0, 0, 0, *pf, round(net * 10), round(sum(apparent) * 10), 0, total_pf,
            round((50.0 + rnd.uniform(-0.05, 0.05)) * 10), *tenths(line),
            round(self.imported * 10), round(self.exported * 10), 0, 0,
            0, round((self.imported + self.exported) * 10), 0]
        return self._words

    def log_text(self):
        """
        The reading of the last L{words} as a 0x1b text: numbers in their
        units, in the SDM630 order of Grott's T06501b.
        """
        w = self._words
        if w is None:
            raise ValueError("no meter reading yet: call words() first")

        def at(index, scale=10):
            return w[index] / scale

        energy = at(31)
        numbers = [
            energy, 0.0, *(at(n) for n in (6, 7, 8)), 0.0, 0.0, 0.0,
            *(at(n) for n in (9, 10, 11)), *(at(n, 1000) for n in (15, 16, 17)),
            *(at(n) for n in (0, 1, 2)), *(at(n) for n in (3, 4, 5)),
            at(18), at(19), at(20), at(21, 1000), at(22), at(26), at(27), 0.0, 0.0, 0.0,
            *(round(energy / 3, 1),) * 3, 0.0, 0.0, 0.0, energy,
            *(at(n) for n in (23, 24, 25))]
        return ",".join(f"{n:g}" for n in numbers)


def register_payload(datalogger_serial, inverter_serial, timestamp, blocks, *, protocol):
    """
    The plain body of a register-carrying record (0x03, 0x04, 0x50).

    C{timestamp} is a 6-tuple (year, month, day, hour, minute, second);
    C{blocks} is a sequence of (first register, values).  Wrap it with
    L{grott.codec.build_packet}.
    """
    year, month, day, hour, minute, second = timestamp
    raw_time = bytes((max(0, min(255, year - 2000)), month, day, hour, minute, second))
    return encode_register_record(datalogger_serial, inverter_serial, blocks,
                                  protocol=protocol, timestamp=raw_time)


def blocks_of(table, ranges):
    """
    (first, values) pairs of C{table} for each (first, last) range.
    """
    return [(first, [table.get(r, 0) for r in range(first, last + 1)]) for first, last in ranges]
