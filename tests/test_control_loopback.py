"""
The control plane end to end through the command socket: simulated
dataloggers of several families behind grott's proxy (with the decoder, so
the family is detected from their records), the fake cloud, and a real TCP
admin client.  What a refused write leaves behind is checked in the
simulator's own register table.
"""

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent

from grott import logs
from grott.codec import RecordType
from grott.control import Control
from grott.registers import Decoder
from grott.testing.simulator import DataloggerFactory, SimulatedDatalogger
from tests.test_commands_loopback import TIMEOUT, CommandLoopbackBase, HoldingFactory


class ClampingDatalogger(SimulatedDatalogger):
    """
    An inverter that takes a write but keeps at most 90 in register 3 (as
    a real one clamps to its allowed range): the read-back differs.
    """

    def _command(self, packet):
        SimulatedDatalogger._command(self, packet)
        holding = self.state.inverter.holding
        holding[3] = min(holding[3], 90)


class ClampingFactory(DataloggerFactory):
    def buildProtocol(self, addr):
        protocol = ClampingDatalogger(self.state)
        protocol.factory = self
        self.connection = protocol
        return protocol


class ControlLoopbackBase(CommandLoopbackBase):
    allow_raw_writes = False

    async def setUp(self):
        await CommandLoopbackBase.setUp(self)
        self.proxy.decode = Decoder().decode
        self.control = Control(self.dispatcher, allow_raw_writes=self.allow_raw_writes)
        self.admin.control = self.control
        self.events = EventLoggingObserver.createWithCleanup(self, logs.publisher)

    async def datalogger(self, serial, family="classic", **kw):
        logger = await CommandLoopbackBase.datalogger(self, serial, family=family, **kw)
        session = self.registry.by_serial(serial)
        # The announce is decoded as it passes: the family is known then.
        await logger.state.wait(lambda state: state.stats.acked["announce"] == 1)
        self.assertEqual(session.family, {"min": "tlx"}.get(family, family))
        return logger

    def audit(self):
        return [formatEvent(e) for e in self.events if e.get("audit")]

    @staticmethod
    def settable(logger):
        """The holding table without the clock (45-50), which runs by itself."""
        return {r: v for r, v in logger.state.inverter.holding.items() if not 45 <= r <= 50}

    def writes(self, logger):
        commands = logger.state.stats.commands
        return commands["inverter_write"] + commands["inverter_write_multi"]


class SafetyTests(ControlLoopbackBase):
    async def test_refusedWritesSendNothingAndChangeNothing(self):
        logger = await self.datalogger("SIMA000001", family="min")
        before = self.settable(logger)
        admin = await self.client()
        for line in ("set SIMA000001 30 7", "mset SIMA000001 121 1 2 3",
                     "set SIMA000001 3038 1"):
            answer = await admin.command(line)
            if line.endswith("3038 1"):
                continue
            self.assertEqual(len(answer), 1, answer)
            self.assertTrue(answer[0].startswith("ERROR register "), answer)
            self.assertIn("is not writable for family tlx", answer[0])
        # 3038 (a TL-XH time period) is on the tlx list; the rest were refused.
        self.assertEqual(self.writes(logger), 1)
        for line in ("dset SIMA000001 18 5280", "dset SIMA000001 17 evil.example",
                     "dset SIMA000001 56 my wifi"):
            answer = await admin.command(line)
            self.assertEqual(len(answer), 1, answer)
            self.assertTrue(answer[0].startswith("ERROR datalogger register"), answer)
        self.assertEqual(logger.state.stats.commands["config_set"], 0)
        after = self.settable(logger)
        after[3038], before[3038] = 0, 0
        self.assertEqual(after, before)
        self.assertEqual(logger.state.config[17], b"127.0.0.1")
        stats = await admin.command("stats")
        self.assertIn("  control writes: total=6 ok=1 refused=5 mismatch=0 failed=0", stats)
        audit = self.audit()
        self.assertEqual(len(audit), 6)
        self.assertTrue(any("refused: datalogger register 17 (server address) is protected"
                            in line for line in audit), audit)
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_settingAndAuditLine(self):
        logger = await self.datalogger("SIMA000001", family="min")
        admin = await self.client()
        listing = await admin.command("setting SIMA000001")
        self.assertEqual(listing[0], "family tlx:")
        self.assertIn("  export_limit_rate           123       -100..100 %", listing)
        self.assertEqual(len(listing), 1 + 10)
        self.assertEqual(await admin.command("setting SIMA000001 active_power_rate"),
                         ["SETTING active_power_rate Value: 100 (reg 3=100)"])
        self.assertEqual(await admin.command("setting SIMA000001 active_power_rate 80"),
                         ["SETTING active_power_rate Value: 80 (reg 3=80)"])
        self.assertEqual(logger.state.inverter.holding[3], 80)
        self.assertEqual(await admin.command("setting SIMA000001 export_limit_rate -12.5"),
                         ["SETTING export_limit_rate Value: -12.5 (reg 123=65411)"])
        self.assertEqual(logger.state.inverter.holding[123], 0x10000 - 125)
        self.assertEqual(await admin.command("setting SIMA000001 on_off off"),
                         ["SETTING on_off Value: off (reg 0=0)"])
        self.assertEqual(await admin.command("setting SIMA000001 ac_charge on"),
                         ["SETTING ac_charge Value: on (reg 3049=1)"])
        for line, error in [
            ("setting SIMA000001 active_power_rate 101", "outside 0..100 %"),
            ("setting SIMA000001 nonsense 1", "no setting 'nonsense' for family tlx"),
            ("setting SIMA000001 on_off maybe", "is not on or off"),
            ("setting SIMA000001 battery_first_slot_1 01:00-02:00", "no setting"),
        ]:
            answer = await admin.command(line)
            self.assertEqual(len(answer), 1, answer)
            self.assertTrue(answer[0].startswith("ERROR ") and error in answer[0], (line, answer))
        self.assertEqual(logger.state.inverter.holding[3], 80)
        audit = self.audit()
        peer = admin.transport.getHost()
        self.assertIn(f"control: telnet 127.0.0.1:{peer.port} on SIMA000001: setting "
                      "active_power_rate := '80': 100 -> 80: ok", audit)
        # Old and new in the setting's unit (the raw words are 0 and 65411).
        self.assertIn(f"control: telnet 127.0.0.1:{peer.port} on SIMA000001: setting "
                      "export_limit_rate := '-12.5': 0 -> -12.5: ok", audit)
        self.assertEqual(len(audit), 8)
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_readBackMismatchIsAnError(self):
        logger = await self.datalogger("SIMA000001", factory=ClampingFactory)
        admin = await self.client()
        answer = await admin.command("set SIMA000001 3 95")
        self.assertEqual(answer, ["ERROR read-back mismatch: register 3 holds 90, not 95"])
        self.assertEqual(await admin.command("setting SIMA000001 active_power_rate 50"),
                         ["SETTING active_power_rate Value: 50 (reg 3=50)"])
        self.assertIn("  control writes: total=2 ok=1 refused=0 mismatch=1 failed=0",
                      self.control.report_lines())
        self.assertTrue(any("100 -> 90: read-back mismatch" in line for line in self.audit()))
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_writeTimeoutIsAuditedAsFailed(self):
        logger = await self.datalogger("SIMA000001", family="min", factory=HoldingFactory)
        admin = await self.client()
        answer = admin.command("setting SIMA000001 active_power_rate 70")
        await logger.whenHeld(1)
        logger.release()  # the read before the write is answered
        await logger.whenHeld(1)  # the write waits
        self.clock.advance(TIMEOUT)
        error = await answer
        self.assertTrue(error[0].startswith("ERROR timeout: datalogger SIMA000001 did not "
                                            "answer set 3"), error)
        self.assertTrue(any(line.endswith("setting active_power_rate := '70': 100 -> ?: "
                                          "failed: timeout: datalogger SIMA000001 did not "
                                          "answer set 3 within 10 s") for line in self.audit()),
                        self.audit())
        self.assertIn("  control writes: total=1 ok=0 refused=0 mismatch=0 failed=1",
                      self.control.report_lines())
        logger.release()  # the late answer is swallowed
        await self.roundTrip(logger)
        self.assertEqual(self.dispatcher.counts["late_replies"], 1)
        self.assertCloudSawNoReplies()

    async def test_clockSetAndReadBack(self):
        logger = await self.datalogger("SIMA000001", family="min")
        admin = await self.client()
        answer = await admin.command("setting SIMA000001 inverter_clock 2025-06-01 12:30:00")
        self.assertEqual(len(answer), 1)
        self.assertTrue(answer[0].startswith("SETTING inverter_clock Value: 2025-06-01 12:3"),
                        answer)
        self.assertEqual(self.writes(logger), 1)
        self.assertEqual(logger.state.stats.commands["inverter_write_multi"], 1)
        held = logger.state.inverter.holding_snapshot(logger.state.epoch())
        self.assertEqual([held[r] for r in range(45, 48)], [2025, 6, 1])


class StorageTests(ControlLoopbackBase):
    async def test_slotIsOneAtomicMultiRegisterWrite(self):
        logger = await self.datalogger("SIMS000001", family="storage")
        admin = await self.client()
        self.assertEqual(await admin.command("setting SIMS000001 battery_first_slot_2 "
                                             "06:30-08:15 on"),
                         [("SETTING battery_first_slot_2 Value: 06:30-08:15 on "
                           "(reg 1103=1566, reg 1104=2063, reg 1105=1)")])
        self.assertEqual(logger.state.stats.commands["inverter_write_multi"], 1)
        self.assertEqual(logger.state.stats.commands["inverter_write"], 0)
        holding = logger.state.inverter.holding
        self.assertEqual([holding[r] for r in (1103, 1104, 1105)], [6 << 8 | 30, 8 << 8 | 15, 1])
        for name, value, register, raw in [("battery_first_stop_soc", "95", 1091, 95),
                                           ("grid_first_stop_soc", "20", 1071, 20),
                                           ("grid_first_discharge_rate", "50", 1070, 50),
                                           ("ac_charge", "on", 1092, 1),
                                           ("priority", "battery", 1044, 1)]:
            answer = await admin.command(f"setting SIMS000001 {name} {value}")
            self.assertTrue(answer[0].startswith(f"SETTING {name} Value: "), answer)
            self.assertEqual(holding[register], raw)
        # mset: consecutive writable registers in one 0x10; the reply is
        # what the inverter holds after it.
        self.assertEqual(await admin.command("mset SIMS000001 1080 512 768 1"),
                         ["SET Reg: 1080 Value: 512", "SET Reg: 1081 Value: 768",
                          "SET Reg: 1082 Value: 1"])
        self.assertEqual(logger.state.stats.commands["inverter_write_multi"], 2)
        # One register outside the list: nothing of it is written.
        answer = await admin.command("mset SIMS000001 1088 5 5")
        self.assertTrue(answer[0].startswith("ERROR register 1089 is not writable"), answer)
        self.assertEqual(holding[1088], 0)
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()
        cloudReplies = [item for item in self.cloud.received
                        if item.packet is not None
                        and item.packet.record_type == RecordType.INVERTER_WRITE_MULTI]
        self.assertEqual(cloudReplies, [])


class RawWriteTests(ControlLoopbackBase):
    allow_raw_writes = True

    async def test_rawWritesAllowedButServerAddressStillProtected(self):
        logger = await self.datalogger("SIMA000001")
        admin = await self.client()
        self.assertEqual(await admin.command("set SIMA000001 30 7"), ["SET Reg: 30 Value: 7"])
        self.assertEqual(await admin.command("dset SIMA000001 56 my wifi"),
                         ["SET Reg: 56 Value: my wifi"])
        answer = await admin.command("dset SIMA000001 19 evil.example")
        self.assertTrue(answer[0].startswith("ERROR datalogger register 19 (server address) "
                                             "is protected"), answer)
        self.assertEqual(logger.state.config[19], b"127.0.0.1")
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()
