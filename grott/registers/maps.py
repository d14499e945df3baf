"""
The register maps of the common inverter families, as data.

Names are Grott's MQTT field names where a Grott layout maps the register
(users have dashboards built on them); registers without a Grott name get a
name in the same style.  Register numbers, units and scales follow
protocol.md section 10 (the Modbus RTU protocol numbering), which is where
Grott's byte-offset layouts disagree.

A family lists its input registers (0x04/0x50 data) and holding registers
(0x03 announce).  Two kinds of repetition are deliberate:

 - aliases: different names for the same register (Grott publishes an SPF's
   output power both as C{op_watt} and C{pvpowerout}); all are decoded;
 - alternates: the same name at two places (an SPA reports its inverter
   side at 2000.. instead of 0..); the first one whose registers are all
   present in the record wins, the other's registers stay C{reg_<n>}.
"""

from grott.registers.fields import code_text, s16, s32, text, u16, u32

__all__ = ["ALIASES", "DTC_FAMILIES", "FAMILIES", "Family", "family_name"]


class Family:
    """
    A named register map.  C{input} and C{holding} are tuples of
    L{grott.registers.fields.Field} in output order.
    """

    __slots__ = ("blocks", "holding", "input", "name", "title")

    def __init__(self, name, title, input, holding, blocks):
        self.name = name
        self.title = title
        self.input = tuple(input)
        self.holding = tuple(holding)
        #: Typical block layouts (documentation only).
        self.blocks = blocks

    def fields(self, table):
        return self.input if table == "input" else self.holding

    def __repr__(self):
        return f"<Family {self.name}>"


def _pv_strings(count, voltage, step):
    """PVn voltage, current and power (32-bit) every C{step} registers."""
    fields = []
    for n in range(1, count + 1):
        base = voltage + (n - 1) * step
        fields += [u16(f"pv{n}voltage", base, "V", 10), u16(f"pv{n}current", base + 1, "A", 10),
                   u32(f"pv{n}watt", base + 2, "W", 10)]
    return fields


def _phases(voltage, step, names=("pvgridvoltage", "pvgridcurrent", "pvgridpower"), first=""):
    """Three phases: voltage, current, power (32-bit VA); phase 1 has suffix C{first}."""
    fields = []
    for phase in range(3):
        suffix = first if phase == 0 else str(phase + 1)
        base = voltage + phase * step
        fields += [u16(names[0] + suffix, base, "V", 10), u16(names[1] + suffix, base + 1, "A", 10),
                   u32(names[2] + suffix, base + 2, "VA", 10)]
    return fields


# ------------------------------------------------------------------ classic

CLASSIC_INPUT = (
    u16("pvstatus", 0),
    code_text("status_text", 0, "inverter_status"),
    u32("pvpowerin", 1, "W", 10),
    *_pv_strings(2, 3, 4),
    s32("pvpowerout", 11, "W", 10),
    u16("pvfrequentie", 13, "Hz", 100),
    *_phases(14, 4),
    u32("pvenergytoday", 26, "kWh", 10),
    u32("pvenergytotal", 28, "kWh", 10),
    u32("totworktime", 30, "h", 7200),
    u16("pvtemperature", 32, "°C", 10),
    u16("isof", 33), u16("gfcif", 34), u16("dcif", 35), u16("vpvfault", 36),
    u16("vacfault", 37), u16("facfault", 38), u16("tmpfault", 39),
    u16("faultcode", 40),
    code_text("fault_text", 40, "fault"),
    u16("pvipmtemperature", 41, "°C", 10),
    u16("pbusvolt", 42, "V", 10),
    u16("nbusvolt", 43, "V", 10),
    u16("checkstep", 44), u16("ipf", 45), u16("resetchk", 46), u16("deratingmode", 47),
    u32("epv1today", 48, "kWh", 10),
    u32("epv1total", 50, "kWh", 10),
    u32("epv2today", 52, "kWh", 10),
    u32("epv2total", 54, "kWh", 10),
    u32("epvtotal", 56, "kWh", 10),
    u32("rac", 58, "var", 10),
    u32("eractoday", 60, "kvarh", 10),
    u32("eractotal", 62, "kvarh", 10),
)

#: The old protocol's holding map differs from v1.2x after register 30:
#: 34..41 are not text and 43 is not a device type code (134 seen); the
#: manufacturer text sits at 59..66 ("Growatt Inverter" in a real announce).
CLASSIC_HOLDING = (
    u16("onoff", 0),
    u16("activepowerrate", 3, "%"),
    u32("ratedpower", 6, "W", 10),
    text("firmware", 9, 3),
    text("controlfirmware", 12, 3),
    text("serialnumber", 23, 5),
    u32("modulecode", 28),
    u16("modbusaddress", 30),
    text("manufacturer", 59, 8),
)

# ------------------------------------------------------- protocol II v1.2x

#: Holding registers shared by every family on protocol II v1.2x (§7.3, §10.6).
V12_HOLDING = (
    u16("onoff", 0),
    u16("activepowerrate", 3, "%"),
    u16("reactivepowerrate", 4),
    u16("powerfactor", 5),
    u32("ratedpower", 6, "W", 10),
    text("firmware", 9, 3),
    text("controlfirmware", 12, 3),
    u16("lcdlanguage", 15),
    u16("baudrate", 22),
    text("serialnumber", 23, 5),
    u32("modulecode", 28),
    u16("modbusaddress", 30),
    text("manufacturer", 34, 8),
    u16("devicetypecode", 43),
    u16("trackerphase", 44),
    u16("invyear", 45), u16("invmonth", 46), u16("invday", 47),
    u16("invhour", 48), u16("invminute", 49), u16("invsecond", 50),
    u16("modbusversion", 88),
    u16("exportlimitmode", 122),
    s16("exportlimitrate", 123, "%", 10),
)

#: Input registers 0..124, the "first group" of TL3-X, MIX and SPH (§10.2).
FIRST_GROUP = (
    u16("pvstatus", 0),
    code_text("status_text", 0, "inverter_status"),
    u32("pvpowerin", 1, "W", 10),
    *_pv_strings(8, 3, 4),
    s32("pvpowerout", 35, "W", 10),
    u16("pvfrequentie", 37, "Hz", 100),
    *_phases(38, 4),
    u16("vacrs", 50, "V", 10), u16("vacst", 51, "V", 10), u16("vactr", 52, "V", 10),
    u32("pvenergytoday", 53, "kWh", 10),
    u32("eactoday", 53, "kWh", 10),
    u32("pvenergytotal", 55, "kWh", 10),
    u32("eactotal", 55, "kWh", 10),
    u32("totworktime", 57, "h", 7200),
    *[field for n in range(1, 9) for field in (
        u32(f"epv{n}today", 59 + 4 * (n - 1), "kWh", 10),
        u32(f"epv{n}total", 61 + 4 * (n - 1), "kWh", 10))],
    u32("epvtotal", 91, "kWh", 10),
    u16("pvtemperature", 93, "°C", 10),
    u16("pvipmtemperature", 94, "°C", 10),
    u16("pvboosttemp", 95, "°C", 10),
    u16("bat_dsp", 97, "V", 10),
    u16("pbusvolt", 98, "V", 10),
    u16("nbusvolt", 99, "V", 10),
    u16("ipf", 100),
    u16("realoppercent", 101, "%"),
    u32("opfullwatt", 102, "W", 10),
    u16("deratingmode", 104),
    u16("faultcode", 105),
    code_text("fault_text", 105, "fault"),
    u16("faultsubcode", 107),
)

TL3X_INPUT = FIRST_GROUP + (
    u16("warningbits", 110), u16("warningsubcode", 111), u16("warningcode", 112),
    # second group 125..249 ([P]; no capture of this family was found)
    *[field for n in range(1, 9) for field in (
        u16(f"pid{n}voltage", 125 + 2 * (n - 1), "V", 10),
        s16(f"pid{n}current", 126 + 2 * (n - 1), "mA", 10))],
    u16("pidstatus", 141),
    *[field for n in range(1, 17) for field in (
        u16(f"string{n}voltage", 142 + 2 * (n - 1), "V", 10),
        s16(f"string{n}current", 143 + 2 * (n - 1), "A", 10))],
    u16("strunmatch", 174), u16("strcurrentunbalance", 175), u16("strdisconnect", 176),
    u16("pidfaultcode", 177), u16("stringprompt", 178), u16("pvwarningvalue", 179),
    u16("iso", 200, "kΩ"),
    u16("dcir", 201, "mA", 10), u16("dcis", 202, "mA", 10), u16("dcit", 203, "mA", 10),
    u16("pidbusvoltage", 204, "V", 10),
    u16("gfci", 205, "mA"),
    u32("apparentpower", 230, "VA", 10),
    s32("reactivepower", 232, "var", 10),
    u32("reactivepowermax", 234, "var", 10),
    u32("reactiveenergytotal", 236, "kvarh", 10),
    u16("afci_status", 238),
    # MAX 1500 V / MAX-X LV: strings 9..16 at 875.. ([P] page 56)
    *[field for field in _pv_strings(16, 843, 4) if field.register >= 875],
)

# ------------------------------------------------------------ TL-X / MIN

TLX_INPUT = (
    u16("pvstatus", 3000),
    code_text("status_text", 3000, "tlx_status"),
    u32("pvpowerin", 3001, "W", 10),
    *_pv_strings(4, 3003, 4),
    u32("systemoutputpower", 3019, "W", 10),
    u32("reactivepower", 3021, "var", 10),
    u32("pvpowerout", 3023, "W", 10),
    u16("pvfrequentie", 3025, "Hz", 100),
    *_phases(3026, 4),
    u16("vacrs", 3038, "V", 10), u16("vacst", 3039, "V", 10), u16("vactr", 3040, "V", 10),
    u32("ptousertotal", 3041, "W", 10),
    u32("ptogridtotal", 3043, "W", 10),
    u32("ptoloadtotal", 3045, "W", 10),
    u32("totworktime", 3047, "h", 7200),
    u32("pvenergytoday", 3049, "kWh", 10),
    u32("pvenergytotal", 3051, "kWh", 10),
    u32("epvtotal", 3053, "kWh", 10),
    u32("epv1today", 3055, "kWh", 10), u32("epv1total", 3057, "kWh", 10),
    u32("epv2today", 3059, "kWh", 10), u32("epv2total", 3061, "kWh", 10),
    u32("epv3today", 3063, "kWh", 10), u32("epv3total", 3065, "kWh", 10),
    u32("etousertoday", 3067, "kWh", 10), u32("etousertotal", 3069, "kWh", 10),
    u32("etogridtoday", 3071, "kWh", 10), u32("etogridtotal", 3073, "kWh", 10),
    u32("eloadtoday", 3075, "kWh", 10), u32("eloadtotal", 3077, "kWh", 10),
    u32("epv4today", 3079, "kWh", 10), u32("epv4total", 3081, "kWh", 10),
    u32("epvtoday", 3083, "kWh", 10),
    u16("deratingmode", 3086),
    u16("iso", 3087, "kΩ"),
    u16("dcir", 3088, "mA", 10), u16("dcis", 3089, "mA", 10), u16("dcit", 3090, "mA", 10),
    u16("gfci", 3091, "mA"),
    u16("busvoltage", 3092, "V", 10),
    u16("pvtemperature", 3093, "°C", 10),
    u16("pvipmtemperature", 3094, "°C", 10),
    u16("temp3", 3095, "°C", 10),
    u16("temp4", 3096, "°C", 10),
    u16("temp5", 3097, "°C", 10),
    u16("pbusvoltage", 3098, "V", 10),
    u16("nbusvoltage", 3099, "V", 10),
    u16("ipf", 3100),
    u16("realoppercent", 3101, "%"),
    u32("opfullwatt", 3102, "W", 10),
    u16("standbyflag", 3104),
    u16("faultcode", 3105),
    code_text("fault_text", 3105, "fault"),
    u16("warningcode", 3106),
    u16("faultsubcode", 3107),
    u16("warningsubcode", 3108),
    u16("afci_fftvalue", 3111),
    u16("afci_status", 3112),
    u16("afci_strength", 3113),
    u16("afci_selfcheck", 3114),
    u16("invstartdelaytime", 3115, "s"),
    u16("bdconoffstate", 3118),
    u16("drycontactstate", 3119),
    u32("selfusepower", 3121, "W", 10),
    u32("systemenergytoday", 3123, "kWh", 10),
    # 3125..3249: TL-XH storage part (protocol II v1.24, checked register by
    # register; docs/registers.md lists where Grott's layouts differ)
    u32("edischrtoday", 3125, "kWh", 10), u32("edischrtotal", 3127, "kWh", 10),
    u32("echrtoday", 3129, "kWh", 10), u32("echrtotal", 3131, "kWh", 10),
    u32("eacchrtoday", 3133, "kWh", 10), u32("eacchrtotal", 3135, "kWh", 10),
    u32("Esys_total", 3137, "kWh", 10),
    u32("Eself_today", 3139, "kWh", 10),
    u32("Eself_total", 3141, "kWh", 10),
    u16("priority", 3144),
    u16("epsfac", 3145, "Hz", 100),
    *_phases(3146, 4, ("epsvac", "epsiac", "epspac"), first="1"),
    u32("epspac", 3158, "VA", 10),
    u16("loadpercent", 3160, "%", 10),
    u16("pf", 3161, "", 10),
    u16("dcv", 3162, "V", 1000),
    u16("newbdcflag", 3164),
    u16("bdcderatingmode", 3165),
    # battery converter (BDC) 1
    u16("bdc1_sysstatemode", 3166),
    u16("bdc1_faultcode", 3167),
    u16("bdc1_warncode", 3168),
    u16("bdc1_vbat", 3169, "V", 100),
    u16("bdc1_ibat", 3170, "A", 10),
    u16("bdc1_soc", 3171, "%"),
    u16("bdc1_vbus1", 3172, "V", 10),
    u16("bdc1_vbus2", 3173, "V", 10),
    u16("bdc1_ibb", 3174, "A", 10),
    u16("bdc1_illc", 3175, "A", 10),
    u16("bdc1_tempa", 3176, "°C", 10),
    u16("bdc1_tempb", 3177, "°C", 10),
    u32("bdc1_pdischr", 3178, "W", 10),
    u32("bdc1_pchr", 3180, "W", 10),
    u32("bdc1_edischrtotal", 3182, "kWh", 10),
    u32("bdc1_echrtotal", 3184, "kWh", 10),
    u16("bdc1_flag", 3187),
    u16("bdc1_vbuslower", 3188, "V", 10),
    # BMS: 16-bit words (Grott's layouts read a second converter, bdc2_*, here)
    u16("bms_maxvoltcellno", 3189),
    u16("bms_minvoltcellno", 3190),
    u16("bms_avgtemp_a", 3191, "°C", 10),
    u16("bms_maxcelltemp_a", 3192, "°C", 10),
    u16("bms_avgtemp_b", 3193, "°C", 10),
    u16("bms_maxcelltemp_b", 3194, "°C", 10),
    u16("bms_avgtemp_c", 3195, "°C", 10),
    u16("bms_maxsoc", 3196, "%"),
    u16("bms_minsoc", 3197, "%"),
    u16("bms_parallelbatterynum", 3198),
    u16("bms_deratereason", 3199),
    u16("bms_gaugefcc", 3200, "Ah"),
    u16("bms_gaugerm", 3201, "Ah"),
    u16("bms_error", 3202),
    u16("bms_warn", 3203),
    u16("bms_fault", 3204),
    u16("bms_fault2", 3205),
    u16("bms_isostatus", 3210),
    u16("bms_requestflags", 3211),
    u16("bms_status", 3212),
    code_text("bms_status_text", 3212, "bms_status"),
    u16("bms_error2", 3213),
    u16("bms_warn2", 3214),
    u16("bms_soc", 3215, "%"),
    u16("bms_batteryvolt", 3216, "V", 100),
    s16("bms_batterycurr", 3217, "A", 100),
    u16("bms_batterytemp", 3218, "°C", 10),
    u16("bms_maxcurr", 3219, "A", 100),
    u16("bms_maxdischrcurr", 3220, "A", 100),
    u16("bms_cyclecnt", 3221),
    u16("bms_soh", 3222, "%"),
    u16("bms_chargevoltlimit", 3223, "V", 100),
    u16("bms_dischargevoltlimit", 3224, "V", 100),
    u16("bms_warn3", 3225),
    u16("bms_error3", 3226),
    u16("bms_cellvoltmax", 3230, "V", 1000),
    u16("bms_cellvoltmin", 3231, "V", 1000),
    u16("bms_batloadvolt", 3232, "V", 100),
)

TLX_HOLDING = V12_HOLDING + (
    u16("exportlimitfailrate", 3000, "%", 10),
    text("serialnumberlong", 3001, 15),
    # TL-XH battery settings (§10.6)
    u16("gridfirstdischargerate", 3036, "%"),
    u16("gridfirststopsoc", 3037, "%"),
    u16("batfirstchargerate", 3047, "%"),
    u16("batfirststopsoc", 3048, "%"),
    u16("acchargeenable", 3049),
    u16("upsenable", 3079),
    u16("upsvoltage", 3080),
    u16("upsfrequency", 3081),
    u16("loadfirststopsoc", 3082, "%"),
)

# ------------------------------------------------------------------ storage

#: The first group as storage inverters use it: storage status words, and
#: the AC charge energy, priority and battery type at 112..119.
_STORAGE_FIRST = tuple(
    code_text("status_text", 0, "storage_status") if field.name == "status_text" else field
    for field in FIRST_GROUP) + (
    u32("eacharge_today", 112, "kWh", 10),
    u32("eacharge_total", 114, "kWh", 10),
    u16("priority", 118),
    u16("batterytype", 119),
)

STORAGE_INPUT = _STORAGE_FIRST + (
    u16("uwsysworkmode", 1000),
    code_text("sysworkmode_text", 1000, "storage_mode"),
    *[u16(f"systemfaultword{n}", 1001 + n) for n in range(8)],
    u32("pdischarge1", 1009, "W", 10),
    u32("p1charge1", 1011, "W", 10),
    u16("vbat", 1013, "V", 10),
    u16("SOC", 1014, "%"),
    u32("pactouserr", 1015, "W", 10), u32("pactousers", 1017, "W", 10),
    u32("pactousert", 1019, "W", 10), u32("pactousertot", 1021, "W", 10),
    u32("pactogridr", 1023, "W", 10), u32("pactogrids", 1025, "W", 10),
    u32("pactogridt", 1027, "W", 10), u32("pactogridtot", 1029, "W", 10),
    u32("plocaloadr", 1031, "W", 10), u32("plocaloads", 1033, "W", 10),
    u32("plocaloadt", 1035, "W", 10), u32("plocaloadtot", 1037, "W", 10),
    u16("ipmtmp", 1039, "°C", 10),
    u16("battemp", 1040, "°C", 10),
    u16("spdspstatus", 1041),
    u16("spbusvolt", 1042, "V", 10),
    u32("etouser_tod", 1044, "kWh", 10), u32("etouser_tot", 1046, "kWh", 10),
    u32("etogrid_tod", 1048, "kWh", 10), u32("etogrid_tot", 1050, "kWh", 10),
    u32("edischarge1_tod", 1052, "kWh", 10), u32("edischarge1_tot", 1054, "kWh", 10),
    u32("eharge1_tod", 1056, "kWh", 10), u32("eharge1_tot", 1058, "kWh", 10),
    u32("elocalload_tod", 1060, "kWh", 10), u32("elocalload_tot", 1062, "kWh", 10),
    u32("exportlimitapparentpower", 1064, "VA", 10),
    u16("epsfac", 1067, "Hz", 100),
    *_phases(1068, 4, ("epsvac", "epsiac", "epspac"), first="1"),
    u16("loadpercent", 1080, "%"),
    u16("pf", 1081, "", 10),
    # BMS ([P] page 62-64)
    u16("bms_statusold", 1082),
    u16("bms_status", 1083),
    u16("bms_errorold", 1084),
    u16("bms_error", 1085),
    u16("bms_soc", 1086, "%"),
    u16("bms_batteryvolt", 1087, "V", 100),
    u16("bms_batterycurr", 1088, "A", 100),
    u16("bms_batterytemp", 1089, "°C", 10),
    u16("bms_maxcurr", 1090, "A", 100),
    u16("bms_gaugerm", 1091),
    u16("bms_gaugefcc", 1092),
    u16("bms_fw", 1093),
    u16("bms_deltavolt", 1094),
    u16("bms_cyclecnt", 1095),
    u16("bms_soh", 1096, "%"),
    u16("bms_constantvolt", 1097, "V", 100),
    u16("bms_warninfoold", 1098),
    u16("bms_warninfo", 1099),
    u16("bms_gaugeiccurr", 1100),
    u16("bms_mcuversion", 1101),
    u16("bms_gaugeversion", 1102),
    u16("bms_gaugefrversion_l", 1103),
    u16("bms_gaugefrversion_h", 1104),
    u16("bms_bmsinfo", 1105),
    u16("bms_packinfo", 1106),
    u16("bms_usingcap", 1107),
    u16("bms_maxcellvolt", 1108, "V", 1000),
    u16("bms_mincellvolt", 1109, "V", 1000),
    u16("bms_modulenum", 1110),
    u16("bms_batterynum", 1111),
    u16("bms_maxvoltcellno", 1112),
    u16("bms_minvoltcellno", 1113),
    u16("bms_maxcelltemp", 1114, "°C", 10),
    u16("bms_mincelltemp", 1115, "°C", 10),
    u16("bms_maxtempcellno", 1116),
    u16("bms_mintempcellno", 1117),
    u16("bms_protectpackid", 1118),
    u16("bms_maxsoc", 1119, "%"),
    u16("bms_minsoc", 1120, "%"),
    u16("bms_error2", 1121),
    u16("bms_error3", 1122),
    u16("bms_warninfo2", 1123),
    # 1124..1148 ([P] page 64-65; the PDF prints no step for 1124-1129: 0.1
    # as every other energy and power of the map)
    u32("acchargeenergytoday", 1124, "kWh", 10),
    u32("acchargeenergytotal", 1126, "kWh", 10),
    u32("acchargepower", 1128, "W", 10),
    u32("extraacpowertogrid", 1131, "W", 10),
    u32("eextra_today", 1133, "kWh", 10),
    u32("eextra_total", 1135, "kWh", 10),
    u32("esystem_today", 1137, "kWh", 10),
    u32("esystem_total", 1139, "kWh", 10),
    u32("eself_today", 1141, "kWh", 10),
    u32("eself_total", 1143, "kWh", 10),
    u32("psystem", 1145, "W", 10),
    u32("pself", 1147, "W", 10),
    # SPA: the inverter side at 2000..2124 is the first group moved by 2000
    # ([P] page 66-70); alternates, used when 0..124 is absent
    *[field._replace(register=field.register + 2000) for field in _STORAGE_FIRST],
)

STORAGE_HOLDING = V12_HOLDING + (
    u16("priority", 1044),
    u16("epsenable", 1060),
    u16("gridfirstdischargerate", 1070, "%"),
    u16("gridfirststopsoc", 1071, "%"),
    u16("batfirstchargerate", 1090, "%"),
    u16("batfirststopsoc", 1091, "%"),
    u16("acchargeenable", 1092),
)

# ------------------------------------------------------------------ off-grid

SPF_INPUT = (
    u16("pvstatus", 0),
    code_text("status_text", 0, "spf_status"),
    u16("vpv1", 1, "V", 10),
    u16("vpv2", 2, "V", 10),
    u32("ppv1", 3, "W", 10),
    u32("ppv2", 5, "W", 10),
    u16("buck1curr", 7, "A", 10),
    u16("buck2curr", 8, "A", 10),
    u32("op_watt", 9, "W", 10),
    u32("pvpowerout", 9, "W", 10),
    u32("op_va", 11, "VA", 10),
    u32("acchr_watt", 13, "W", 10),
    u32("acchr_VA", 15, "VA", 10),
    u16("bat_Volt", 17, "V", 100),
    u16("batterySoc", 18, "%"),
    u16("bus_volt", 19, "V", 10),
    u16("grid_volt", 20, "V", 10),
    u16("line_freq", 21, "Hz", 100),
    u16("outputvolt", 22, "V", 10),
    u16("pvgridvoltage", 22, "V", 10),
    u16("outputfreq", 23, "Hz", 100),
    u16("invtemp", 25, "°C", 10),
    u16("dcdctemp", 26, "°C", 10),
    u16("loadpercent", 27, "%", 10),
    u16("buck1_ntc", 32, "°C", 10),
    u16("buck2_ntc", 33, "°C", 10),
    u16("OP_Curr", 34, "A", 10),
    u16("Inv_Curr", 35, "A", 10),
    u32("AC_InWatt", 36, "W", 10),
    u32("AC_InVA", 38, "VA", 10),
    u16("faultBit", 40), u16("warningBit", 41), u16("faultValue", 42), u16("warningValue", 43),
    u16("constantPowerOK", 47),
    u32("epvtoday", 48, "kWh", 10),
    u32("pvenergytoday", 48, "kWh", 10),
    u32("epvtotal", 50, "kWh", 10),
    u32("pvenergytotal", 50, "kWh", 10),
    u32("eacCharToday", 56, "kWh", 10), u32("eacCharTotal", 58, "kWh", 10),
    u32("ebatDischarToday", 60, "kWh", 10), u32("ebatDischarTotal", 62, "kWh", 10),
    u32("eacDischarToday", 64, "kWh", 10), u32("eacDischarTotal", 66, "kWh", 10),
    u16("ACCharCurr", 68, "A", 10),
    u32("ACDischarWatt", 69, "W", 10), u32("ACDischarVA", 71, "VA", 10),
    u32("BatDischarWatt", 73, "W", 10), u32("BatDischarVA", 75, "VA", 10),
    s32("BatWatt", 77, "W", 10),
    u16("invfanspeed", 82, "%"),
    u32("eopDischrToday", 85, "kWh", 10), u32("eopDischrTotal", 87, "kWh", 10),
)

#: Unverified: no SPF announce was captured; register 1 is the output
#: source priority the cloud writes (§10.6).
SPF_HOLDING = (
    u16("onoff", 0),
    u16("outputsourcepriority", 1),
    text("firmware", 9, 3),
    text("controlfirmware", 12, 3),
    text("serialnumber", 23, 5),
)

# ------------------------------------------------------------------ families

FAMILIES = {family.name: family for family in (
    Family("classic", "Classic inverters on the old RTU protocol v3.x (S, MTL-S, TL3-S)",
           CLASSIC_INPUT, CLASSIC_HOLDING, "0-44, 45-89 (sometimes + 90-134)"),
    Family("tlx", "TL-X / TL-XH / MIN / MOD TL3-XH (3000-range registers)",
           TLX_INPUT, TLX_HOLDING, "input 3000-3124, 3125-3249; holding 0-124, 3000-3124"),
    Family("tl3x", "TL3-X three-phase (MAX, MID, MAC)",
           TL3X_INPUT, V12_HOLDING, "0-124, 125-249"),
    Family("storage", "Storage SPH / SPA / MIX",
           STORAGE_INPUT, STORAGE_HOLDING, "0-124, 1000-1124, 1125-1249 / 2000-2124"),
    Family("spf", "Off-grid SPF",
           SPF_INPUT, SPF_HOLDING, "0-44, 45-89, 90-134"),
)}

#: Other names users may write in config.yaml, to the canonical family.
ALIASES = {
    "default": "classic", "s": "classic", "mtl-s": "classic", "tl3-s": "classic",
    "min": "tlx", "tl-x": "tlx", "tl-xh": "tlx", "tlxh": "tlx", "mic": "tlx", "mod": "tlx",
    "mod-xh": "tlx", "tl3-xh": "tlx",
    "max": "tl3x", "mid": "tl3x", "mac": "tl3x", "tl3-x": "tl3x", "tl3": "tl3x",
    "sph": "storage", "spa": "storage", "mix": "storage",
    "offgrid": "spf", "off-grid": "spf",
}

#: Device type codes (holding register 43, protocol.md section 11).
DTC_FAMILIES = {
    5100: "tlx", 5200: "tlx", 5201: "tlx", 5400: "tlx",
    3502: "storage", 3601: "storage", 3725: "storage", 3735: "storage",
}


def family_name(name):
    """
    The canonical family for C{name} (a family or an alias, any case), or
    None when there is no such family.
    """
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    if key in FAMILIES:
        return key
    return ALIASES.get(key)

