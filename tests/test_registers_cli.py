"""
`grott decode` with the register decoder: records for data and announce
packets, an error field for records that do not add up.
"""

import io
import json

from twisted.trial.unittest import SynchronousTestCase

from grott.codec import build_packet, parse_packet
from grott.scripts import decode
from tests.vectors import BY_ID, raw


def run(*args, stdin=""):
    options = decode.Options()
    options.parseOptions(list(args))
    out, err = io.StringIO(), io.StringIO()
    status = decode.main(options, io.StringIO(stdin), out, err)
    return status, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


class DecodeCommandTests(SynchronousTestCase):
    def test_data_packet(self):
        vector = BY_ID["grott-p6-0104-classic"]
        status, (packet,), err = run(vector["hex"])
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(packet["record_name"], "data")
        record = packet["record"]
        self.assertEqual(record["family"], "classic")
        self.assertEqual(record["timestamp"], "2020-07-25T16:10:39")
        self.assertFalse(record["buffered"])
        self.assertIsNone(record["device_type_code"])
        self.assertEqual(record["values"]["pvpowerin"], 217.4)
        self.assertEqual(record["units"]["pvpowerin"], "W")
        self.assertEqual(record["units"]["pvtemperature"], "°C")
        self.assertEqual(record["blocks"], vector["expected"]["register_blocks"])
        self.assertNotIn("error", packet)

    def test_buffered_packet_from_stdin_with_noise(self):
        text = "0x" + " ".join(BY_ID["grott-p6-0150-min-xdavidx93-a"]["hex"][i:i + 2]
                               for i in range(0, 1170, 2))
        status, (packet,), _ = run(stdin=text)
        self.assertEqual(status, 0)
        self.assertTrue(packet["record"]["buffered"])
        self.assertEqual(packet["record"]["family"], "tlx")

    def test_announce_and_dtc(self):
        status, (packet,), _ = run(BY_ID["grott-p5-5103-min-announce"]["hex"])
        self.assertEqual(status, 0)
        self.assertEqual(packet["record"]["device_type_code"], 5100)
        self.assertEqual(packet["record"]["identification"]["firmware"], "AL1.0")

    def test_dtc_option_applies_the_filter(self):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("dtc_filter:\n  5100: [pvstatus, pvpowerout]\n")
        hexes = BY_ID["grott-p6-0104-min-xdavidx93-a"]["hex"]
        status, (packet,), _ = run("--config", path, "--dtc", "5100", hexes)
        self.assertEqual(status, 0)
        self.assertEqual(packet["record"]["values"], {"pvstatus": 1, "pvpowerout": 4360.9})
        self.assertEqual(packet["record"]["device_type_code"], 5100)

    def test_bad_config(self):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("families:\n  ABC: toaster\n")
        status, out, err = run("--config", path, BY_ID["grott-p6-0104-classic"]["hex"])
        self.assertEqual((status, out), (2, []))
        self.assertIn(path, err)
        self.assertIn("unknown family 'toaster'", err)

    def test_record_that_does_not_add_up(self):
        """
        Header fields are printed with an error instead of a record; the
        exit status stays 0.
        """
        packet = parse_packet(raw("grott-p6-0104-classic"))
        broken = build_packet(packet.record_type, packet.payload[:-3], protocol=6,
                              sequence=packet.sequence)
        status, (result,), err = run(broken.hex())
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(result["datalogger_serial"], "JPC281833B")
        self.assertNotIn("record", result)
        self.assertIn("block 2 at packet offset 169", result["error"])

    def test_other_packets_have_no_record(self):
        status, (ping,), _ = run(BY_ID["grott-p6-0116-ping"]["hex"])
        self.assertEqual(status, 0)
        self.assertNotIn("record", ping)
        self.assertNotIn("error", ping)

    def test_as_installed_options(self):
        """--config and --dtc are in the subcommand's help."""
        text = str(decode.Options())
        self.assertIn("--config", text)
        self.assertIn("--dtc", text)
