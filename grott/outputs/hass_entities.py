"""
The curated Home Assistant entities per inverter family (and for smart
meters, family C{"meter"}): which values a user sees, under which name,
with which unit, classes and precision.

A table, not code: each L{Entity} names the value it reads (C{key}), where
that value lives (C{source}: C{"input"} for live data records, C{"holding"}
for the announce), the Home Assistant component (C{sensor} today; control
components such as C{number} or C{select} fit the same rows through
C{extra}), and how Home Assistant should treat it.  L{entities_for} gives a
family's table; L{grott.outputs.hass} turns rows into discovery configs.

Everything a family's registers carry that is not in its table is not
announced unless C{outputs.mqtt.discovery_all} is true; then it is announced
disabled by default, with classes guessed from the unit (L{guessed}).

At most L{MAX_ENABLED} rows of a family are enabled (a test checks it): the
dashboard and Energy panel values, not every register.
"""

import dataclasses

from grott.registers.record import METER

__all__ = ["BATTERY_SIGNS", "MAX_ENABLED", "METER", "METER_PHASE_SIGNS", "Entity",
           "entities_for", "guessed", "status_template"]

#: Upper bound of enabled entities per inverter (the issue's promise).
MAX_ENABLED = 60


@dataclasses.dataclass(frozen=True)
class Entity:
    """
    One entity row.

    @ivar key: the value name in the record (L{grott.registers} naming).
    @ivar source: C{"input"} (data records, the live state topic),
        C{"holding"} (announce records, the announce topic) or C{"log"}
        (a smart meter's 0x1b log records, its log topic).
    @ivar extra: more config keys for this component (templates, options,
        command topics for control entities).
    @ivar tracker: the PV input this row belongs to (disabled by default on
        an inverter that announced fewer).
    @ivar phase: the AC phase this row belongs to (likewise).
    """

    key: str
    name: str
    unit: str = None
    device_class: str = None
    state_class: str = None
    precision: int = None
    category: str = None
    enabled: bool = True
    component: str = "sensor"
    source: str = "input"
    icon: str = None
    extra: tuple = ()
    #: Enabled only if the inverter has this many PV trackers / AC phases
    #: (announce register 44; unknown counts enable everything).
    tracker: int = None
    phase: int = None
    #: Enabled only on an inverter whose records show a battery.
    battery: bool = False

    def fits(self, trackers, phases, battery=None):
        """
        Whether this row applies to an inverter with C{trackers} PV inputs,
        C{phases} AC phases and C{battery} (None: unknown, assume it does).
        """
        return not ((trackers and self.tracker and self.tracker > trackers)
                    or (phases and self.phase and self.phase > phases)
                    or (self.battery and battery is False))


def _power(key, name, **kw):
    return Entity(key, name, "W", "power", "measurement", 0, **kw)


def _apparent(key, name, **kw):
    return Entity(key, name, "VA", "apparent_power", "measurement", 0, **kw)


def _voltage(key, name, **kw):
    return Entity(key, name, "V", "voltage", "measurement", 1, **kw)


def _current(key, name, **kw):
    return Entity(key, name, "A", "current", "measurement", 1, **kw)


def _energy(key, name, **kw):
    return Entity(key, name, "kWh", "energy", "total_increasing", 1, **kw)


def _temperature(key, name, **kw):
    return Entity(key, name, "°C", "temperature", "measurement", 1, **kw)


def _frequency(key, name, **kw):
    return Entity(key, name, "Hz", "frequency", "measurement", 2, **kw)


def _battery(key, name, **kw):
    return Entity(key, name, "%", "battery", "measurement", 0, **kw)


def _code(key, name, **kw):
    kw.setdefault("category", "diagnostic")
    return Entity(key, name, icon="mdi:alert-circle-outline", **kw)


def _needs_battery(rows):
    return [dataclasses.replace(row, battery=True) for row in rows]


#: Values that are above zero whenever a battery is connected (a TL-X
#: without one reports its battery registers as zeros).
BATTERY_SIGNS = ("bdc1_vbat", "bms_batteryvolt", "bms_soc")


def status_template(key, low_byte):
    """
    A template turning the status register into words (protocol.md: 0
    waiting/standby, 1 normal, 3 fault, 4 flash; storage inverters report
    their normal operating modes as 5 and 6; the high byte of a TL-X status
    is an operating mode, not a status).  Other codes show as "Status N".
    """
    value = f"(value_json['values']['{key}'] | int(0))"
    if low_byte:
        value = f"({value} % 256)"
    return ("{{ {0: 'Waiting', 1: 'Normal', 3: 'Fault', 4: 'Flash', 5: 'Normal', "
            "6: 'Normal'}.get(" + value + ", 'Status ' ~ " + value + ") }}")


def _status(key="pvstatus", low_byte=False):
    return Entity(key, "Status", icon="mdi:information-outline",
                  extra=(("value_template", status_template(key, low_byte)),))


def _strings(count, energy=True):
    rows = []
    for n in range(1, count + 1):
        rows += [_power(f"pv{n}watt", f"PV{n} power", tracker=n),
                 _voltage(f"pv{n}voltage", f"PV{n} voltage", tracker=n),
                 _current(f"pv{n}current", f"PV{n} current", tracker=n)]
        if energy:
            rows += [_energy(f"epv{n}today", f"PV{n} energy today", enabled=False, tracker=n),
                     _energy(f"epv{n}total", f"PV{n} energy total", enabled=False, tracker=n)]
    return rows


_GRID_1P = [
    _power("pvpowerout", "Output power"),
    _frequency("pvfrequentie", "Grid frequency"),
    _voltage("pvgridvoltage", "Grid voltage"),
    _current("pvgridcurrent", "Grid current"),
    _apparent("pvgridpower", "Grid apparent power", enabled=False),
]

_GRID_3P = [
    _voltage("pvgridvoltage2", "Grid voltage L2", phase=2),
    _current("pvgridcurrent2", "Grid current L2", phase=2),
    _apparent("pvgridpower2", "Grid apparent power L2", enabled=False, phase=2),
    _voltage("pvgridvoltage3", "Grid voltage L3", phase=3),
    _current("pvgridcurrent3", "Grid current L3", phase=3),
    _apparent("pvgridpower3", "Grid apparent power L3", enabled=False, phase=3),
]

_COMMON = [
    _status(),
    _power("pvpowerin", "PV power"),
    *_GRID_1P,
    _energy("pvenergytoday", "Energy today"),
    _energy("pvenergytotal", "Energy total"),
    _energy("epvtotal", "PV energy total"),
    Entity("totworktime", "Working time", "h", "duration", "total_increasing", 0,
           category="diagnostic"),
    _temperature("pvtemperature", "Inverter temperature"),
    _temperature("pvipmtemperature", "IPM temperature", category="diagnostic"),
    _code("faultcode", "Fault code"),
    _code("deratingmode", "Derating mode", enabled=False),
]

#: Announce (holding) values: settings and identification, all diagnostic,
#: none with a state class (they are not measurements to keep statistics of).
_HOLDING = [
    Entity("firmware", "Firmware", category="diagnostic", source="holding", icon="mdi:chip"),
    Entity("controlfirmware", "Control firmware", category="diagnostic", source="holding",
           icon="mdi:chip", enabled=False),
    Entity("ratedpower", "Rated power", "W", "power", None, 0, category="diagnostic",
           source="holding"),
    Entity("devicetypecode", "Device type code", category="diagnostic", source="holding",
           enabled=False),
    Entity("modbusversion", "Modbus version", category="diagnostic", source="holding",
           enabled=False),
    Entity("activepowerrate", "Active power limit", "%", None, None, 0, category="diagnostic",
           source="holding"),
    Entity("exportlimitrate", "Export limit", "%", None, None, 1, category="diagnostic",
           source="holding", enabled=False),
    Entity("gridfirststopsoc", "Grid first stop SOC", "%", None, None, 0,
           category="diagnostic", source="holding", enabled=False),
    Entity("gridfirstdischargerate", "Grid first discharge rate", "%", None, None, 0,
           category="diagnostic", source="holding", enabled=False),
    Entity("batfirststopsoc", "Battery first stop SOC", "%", None, None, 0,
           category="diagnostic", source="holding", enabled=False),
    Entity("batfirstchargerate", "Battery first charge rate", "%", None, None, 0,
           category="diagnostic", source="holding", enabled=False),
    Entity("loadfirststopsoc", "Load first stop SOC", "%", None, None, 0,
           category="diagnostic", source="holding", enabled=False),
]

_CLASSIC = [
    *_COMMON, *_strings(2), *_GRID_3P,
    Entity("eractoday", "Reactive energy today", "kvarh", None, "total_increasing", 1,
           enabled=False),
    Entity("eractotal", "Reactive energy total", "kvarh", None, "total_increasing", 1,
           enabled=False),
]

_TLX = [
    *[e for e in _COMMON if e.key != "pvstatus"], _status(low_byte=True), *_strings(4),
    *_GRID_3P,
    _energy("epvtoday", "PV energy today"),
    _power("ptousertotal", "Grid import power"),
    _power("ptogridtotal", "Grid export power"),
    _power("ptoloadtotal", "Load power"),
    _energy("etousertoday", "Grid import today"),
    _energy("etousertotal", "Grid import total"),
    _energy("etogridtoday", "Grid export today"),
    _energy("etogridtotal", "Grid export total"),
    _energy("eloadtoday", "Load energy today"),
    _energy("eloadtotal", "Load energy total"),
    _power("selfusepower", "Self-consumption power", enabled=False),
    Entity("reactivepower", "Reactive power", "var", "reactive_power", "measurement", 0,
           category="diagnostic", enabled=False),
    Entity("pf", "Power factor", None, "power_factor", "measurement", 2,
           category="diagnostic", enabled=False),
    Entity("iso", "Insulation resistance", "kΩ", None, "measurement", 0,
           category="diagnostic", enabled=False),
    _code("warningcode", "Warning code"),
    *_needs_battery([
        _battery("bdc1_soc", "Battery SOC"),
        _voltage("bdc1_vbat", "Battery voltage"),
        _power("bdc1_pchr", "Battery charge power"),
        _power("bdc1_pdischr", "Battery discharge power"),
        _temperature("bdc1_tempa", "Battery converter temperature", category="diagnostic",
                     enabled=False),
        _energy("echrtoday", "Battery charge today"),
        _energy("echrtotal", "Battery charge total"),
        _energy("edischrtoday", "Battery discharge today"),
        _energy("edischrtotal", "Battery discharge total"),
        _temperature("bms_batterytemp", "Battery temperature"),
        Entity("bms_soh", "Battery health", "%", None, "measurement", 0, category="diagnostic",
               enabled=False),
        Entity("bms_cyclecnt", "Battery cycles", None, None, "total_increasing", 0,
               category="diagnostic", enabled=False),
    ]),
]

_TL3X = [
    *_COMMON, *_strings(8, energy=False), *_GRID_3P,
    _voltage("vacrs", "Grid voltage L1-L2", enabled=False),
    _voltage("vacst", "Grid voltage L2-L3", enabled=False),
    _voltage("vactr", "Grid voltage L3-L1", enabled=False),
    _temperature("pvboosttemp", "Boost temperature", category="diagnostic", enabled=False),
    _code("warningcode", "Warning code"),
    Entity("reactivepower", "Reactive power", "var", "reactive_power", "measurement", 0,
           category="diagnostic", enabled=False),
]

_STORAGE = [
    *_COMMON, *_strings(2), *_GRID_3P,
    _power("pactousertot", "Grid import power"),
    _power("pactogridtot", "Grid export power"),
    _power("plocaloadtot", "Load power"),
    _power("pdischarge1", "Battery discharge power"),
    _power("p1charge1", "Battery charge power"),
    _voltage("vbat", "Battery voltage"),
    _battery("SOC", "Battery SOC"),
    _temperature("battemp", "Battery temperature"),
    _energy("etouser_tod", "Grid import today"),
    _energy("etouser_tot", "Grid import total"),
    _energy("etogrid_tod", "Grid export today"),
    _energy("etogrid_tot", "Grid export total"),
    _energy("edischarge1_tod", "Battery discharge today"),
    _energy("edischarge1_tot", "Battery discharge total"),
    _energy("eharge1_tod", "Battery charge today"),
    _energy("eharge1_tot", "Battery charge total"),
    _energy("elocalload_tod", "Load energy today"),
    _energy("elocalload_tot", "Load energy total"),
    _energy("eacharge_today", "Grid charge today", enabled=False),
    _energy("eacharge_total", "Grid charge total", enabled=False),
    _voltage("epsvac1", "EPS voltage", enabled=False),
    _apparent("epspac1", "EPS power", enabled=False),
    Entity("loadpercent", "Load percentage", "%", None, "measurement", 0, enabled=False),
]

_SPF = [
    _status(),
    _voltage("vpv1", "PV1 voltage"), _voltage("vpv2", "PV2 voltage"),
    _power("ppv1", "PV1 power"), _power("ppv2", "PV2 power"),
    _power("pvpowerout", "Output power"),
    _apparent("op_va", "Output apparent power", enabled=False),
    _power("acchr_watt", "Grid charge power"),
    _voltage("bat_Volt", "Battery voltage"),
    _battery("batterySoc", "Battery SOC"),
    _power("BatWatt", "Battery power"),
    _voltage("grid_volt", "Grid voltage"),
    _frequency("line_freq", "Grid frequency"),
    _voltage("outputvolt", "Output voltage"),
    _frequency("outputfreq", "Output frequency"),
    _power("AC_InWatt", "Grid input power"),
    _temperature("invtemp", "Inverter temperature"),
    _temperature("dcdctemp", "DC-DC temperature", category="diagnostic"),
    Entity("loadpercent", "Load percentage", "%", None, "measurement", 0),
    _energy("pvenergytoday", "Energy today"),
    _energy("pvenergytotal", "Energy total"),
    _energy("eacCharToday", "Grid charge today"),
    _energy("eacCharTotal", "Grid charge total"),
    _energy("ebatDischarToday", "Battery discharge today"),
    _energy("ebatDischarTotal", "Battery discharge total"),
    _energy("eacDischarToday", "Grid output today", enabled=False),
    _energy("eacDischarTotal", "Grid output total", enabled=False),
    _energy("eopDischrToday", "Output energy today"),
    _energy("eopDischrTotal", "Output energy total"),
    _code("faultValue", "Fault code"),
    _code("warningValue", "Warning code"),
]

def _meter_phases(names, make, label, **kw):
    return [make(key, f"{label} L{n}", phase=n, **kw) for n, key in enumerate(names, 1)]


_POWER_FACTOR = {"unit": None, "device_class": "power_factor", "state_class": "measurement",
                 "precision": 2}

#: A smart meter (its own device): the values of its 0x20 records (Grott's
#: T060120 names) and of its 0x1b log records (T06501b names, source
#: "log"); only the rows whose value a meter's records carry are announced.
#: A meter whose 0x20 values are seen gets its 0x1b rows disabled (the same
#: quantities twice) and its 0x20 C{frequency} only.  Power is signed
#: (negative: exporting); import and export energy are the counters for
#: Home Assistant's Energy panel (grid consumption / return to grid).
_METER = [
    *_meter_phases(("voltage_l1", "voltage_l2", "voltage_l3"), _voltage, "Voltage"),
    *_meter_phases(("Current_l1", "Current_l2", "Current_l3"), _current, "Current"),
    *_meter_phases(("act_power_l1", "act_power_l2", "act_power_l3"), _power, "Power"),
    _power("pos_rev_act_power", "Power"),
    _power("pos_act_power", "Import power", enabled=False),
    _power("rev_act_power", "Export power (negative)", enabled=False),
    Entity("powerfactor", "Power factor", **_POWER_FACTOR),
    _frequency("frequency", "Frequency"),
    _energy("pos_act_energy", "Energy imported"),
    _energy("rev_act_energy", "Energy exported"),
    *_meter_phases(("powerfactor_l1", "powerfactor_l2", "powerfactor_l3"),
                   lambda key, name, **kw: Entity(key, name, **_POWER_FACTOR, **kw),
                   "Power factor", enabled=False),
    *_meter_phases(("app_power_l1", "app_power_l2", "app_power_l3"), _apparent,
                   "Apparent power", enabled=False),
    _apparent("app_power", "Apparent power", enabled=False),
    Entity("react_power", "Reactive power", "var", "reactive_power", "measurement", 0,
           enabled=False),
    _voltage("L1-2_voltage", "Voltage L1-L2", enabled=False, phase=2),
    _voltage("L2-3_voltage", "Voltage L2-L3", enabled=False, phase=3),
    _voltage("L3-1_voltage", "Voltage L3-L1", enabled=False, phase=3),
    _energy("act_energy_kwh", "Energy total", enabled=False),
    Entity("pos_act_energy_kvar", "Reactive energy imported", "kvarh", None,
           "total_increasing", 1, enabled=False),
    Entity("rev_act_energy_kvar", "Reactive energy exported", "kvarh", None,
           "total_increasing", 1, enabled=False),
    # 0x1b (meter log) names, read from the meter's log topic.
    *_meter_phases(("voltageL1", "voltageL2", "voltageL3"), _voltage, "Voltage", source="log"),
    *_meter_phases(("currentL1", "currentL2", "currentL3"), _current, "Current", source="log"),
    *_meter_phases(("activePowerL1", "activePowerL2", "activePowerL3"), _power, "Power",
                   source="log"),
    _power("power", "Power", source="log"),
    Entity("power_factor", "Power factor", **_POWER_FACTOR, source="log"),
    _frequency("frequency", "Frequency", source="log"),
    _energy("posiActivePower", "Energy imported", source="log"),
    _energy("reverActivePower", "Energy exported", source="log"),
    _energy("active_energy", "Active energy", enabled=False, source="log"),
    _apparent("apparent_power", "Apparent power", enabled=False, source="log"),
    Entity("reactive_power", "Reactive power", "var", "reactive_power", "measurement", 0,
           enabled=False, source="log"),
]

#: Values that tell a three-phase meter from a single-phase one.
METER_PHASE_SIGNS = ("voltage_l2", "voltage_l3", "voltageL2", "voltageL3")

_TABLES = {
    "classic": _CLASSIC,
    "tlx": _TLX,
    "tl3x": _TL3X,
    "storage": _STORAGE,
    "spf": _SPF,
    METER: _METER,
}


def entities_for(family):
    """
    The rows for C{family} (its input table, then the announce rows), each
    key once; an unknown or undetected family gets the values most
    families share.
    """
    rows = {}
    holding = () if family == METER else _HOLDING
    for entity in [*_TABLES.get(family, _COMMON), *holding]:
        rows.setdefault((entity.source, entity.key), entity)
    return tuple(rows.values())


# unit -> (device_class, state_class, precision) for values outside the
# tables, announced only with discovery_all.
_GUESSES = {
    "W": ("power", "measurement", 0),
    "kW": ("power", "measurement", 2),
    "VA": ("apparent_power", "measurement", 0),
    "var": ("reactive_power", "measurement", 0),
    "V": ("voltage", "measurement", 1),
    "A": ("current", "measurement", 1),
    "mA": ("current", "measurement", 0),
    "Hz": ("frequency", "measurement", 2),
    "°C": ("temperature", "measurement", 1),
    "kWh": ("energy", "total_increasing", 1),
    "kvarh": (None, "total_increasing", 1),
    "kVAh": (None, "total_increasing", 1),
    "h": ("duration", "total_increasing", 0),
    "s": ("duration", "measurement", 0),
    "%": (None, "measurement", 0),
    "kΩ": (None, "measurement", 0),
}


def guessed(key, unit, source):
    """
    A disabled, diagnostic row for a value no table names (discovery_all).
    Holding values get no state class: they are settings.
    """
    device_class, state_class, precision = _GUESSES.get(unit or "", (None, None, None))
    if source == "holding":
        state_class = None
    return Entity(key, key, unit or None, device_class, state_class, precision,
                  category="diagnostic", enabled=False, source=source)
