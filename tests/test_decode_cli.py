"""
`grott decode`: hex in, one JSON object per packet out; bad input is exit
status 2 and one line on stderr.
"""

import io
import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from grott.scripts import decode
from tests.vectors import BY_ID

PING = BY_ID["grott-p6-0116-ping"]["hex"]
DATA = BY_ID["grott-p6-0104-min-xdavidx93-a"]["hex"]
PLAIN = BY_ID["grott-p2-0104-classic-ghust"]["hex"]


def run(args, stdin=""):
    """
    Run the subcommand as the console script would; return (status,
    stdout, stderr).
    """
    options = decode.Options()
    options.parseOptions(args)
    out, err = io.StringIO(), io.StringIO()
    status = decode.main(options, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


class DecodeTests(SynchronousTestCase):
    def assertDecoded(self, result, vector_ids):
        status, out, err = result
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(len(lines), len(vector_ids))
        for line, vector_id in zip(lines, vector_ids):
            vector = BY_ID[vector_id]
            decoded = json.loads(line)
            self.assertEqual(decoded["protocol"], vector["protocol"])
            self.assertEqual(decoded["record_type"], vector["record_type"])
            self.assertEqual(decoded["sequence"], vector["sequence"])
            self.assertEqual(decoded["length"], vector["length_field"])
            self.assertEqual(decoded["device_address"], vector["device_address"])
            self.assertEqual(decoded["crc_ok"], vector["crc_ok"])
            self.assertEqual(decoded["datalogger_serial"],
                             vector["expected"]["datalogger_serial"])
        return [json.loads(line) for line in lines]

    def test_one_packet(self):
        [decoded] = self.assertDecoded(run([DATA]), ["grott-p6-0104-min-xdavidx93-a"])
        self.assertEqual(decoded["record_name"], "data")
        self.assertEqual(decoded["inverter_serial"], "XTD6A120F5")
        self.assertEqual(decoded["payload_hex"][:20], b"XGD2A106BF".hex())

    def test_several_arguments(self):
        self.assertDecoded(run([PING, PLAIN]),
                           ["grott-p6-0116-ping", "grott-p2-0104-classic-ghust"])

    def test_several_packets_in_one_argument(self):
        """
        A captured stream (packets glued together) is split by the framer.
        """
        self.assertDecoded(run([PING + DATA + PING]),
                           ["grott-p6-0116-ping", "grott-p6-0104-min-xdavidx93-a",
                            "grott-p6-0116-ping"])

    def test_noise_tolerated(self):
        """
        Spaces, newlines, colons, commas and 0x prefixes, as hex turns up
        in logs and bug reports.
        """
        spaced = " ".join(PING[i:i + 2] for i in range(0, len(PING), 2))
        prefixed = ",".join("0x" + PLAIN[i:i + 2].upper() for i in range(0, len(PLAIN), 2))
        coloned = ":".join(PING[i:i + 2] for i in range(0, len(PING), 2))
        wrapped = "\n".join(DATA[i:i + 64] for i in range(0, len(DATA), 64))
        self.assertDecoded(run([spaced, prefixed, coloned, "0x" + wrapped + "\n"]),
                           ["grott-p6-0116-ping", "grott-p2-0104-classic-ghust",
                            "grott-p6-0116-ping", "grott-p6-0104-min-xdavidx93-a"])

    def test_stdin(self):
        self.assertDecoded(run([], stdin=PING + "\n" + DATA + "\n"),
                           ["grott-p6-0116-ping", "grott-p6-0104-min-xdavidx93-a"])

    def test_bad_crc_still_decoded(self):
        """
        A wrong CRC is reported, not refused.
        """
        bad = PING[:-4] + "0000"
        status, out, err = run([bad])
        self.assertEqual((status, err), (0, ""))
        self.assertIs(json.loads(out)["crc_ok"], False)


class DecodeErrorTests(SynchronousTestCase):
    def assertRefused(self, result, *words):
        status, out, err = result
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        self.assertEqual(len(err.splitlines()), 1)
        self.assertTrue(err.endswith("\n"))
        self.assertTrue(err.startswith("grott decode: "))
        for word in words:
            self.assertIn(word, err)

    def test_invalid_hex(self):
        self.assertRefused(run([PING[:10] + "zz" + PING[12:]]), "argument 1", "'z'")

    def test_odd_digits(self):
        self.assertRefused(run([PING + "0"]), "odd")

    def test_truncated(self):
        self.assertRefused(run([DATA[:-2]]), "incomplete", "offset 0")

    def test_truncated_after_good_packet(self):
        """
        Nothing is printed when any part of the input is bad.
        """
        self.assertRefused(run([PING, PING + DATA[:100]]), "argument 2", "offset 40")

    def test_garbage(self):
        self.assertRefused(run(["ffffffffffff" + PING]), "not a packet")

    def test_empty(self):
        self.assertRefused(run([], stdin="\n"), "standard input", "no hex")

    def test_bad_stdin(self):
        self.assertRefused(run([], stdin="hello"), "standard input")


class ConsoleEntryTests(SynchronousTestCase):
    """
    The real console entry, in a child process: argument parsing, exit
    status and streams end to end.
    """

    def grott(self, *args, stdin=""):
        return subprocess.run([sys.executable, "-m", "grott.cli", "decode", *args],
                              input=stdin, capture_output=True, text=True, timeout=60,
                              check=False)

    def test_decode(self):
        result = self.grott(PING, "0x" + PLAIN)
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertEqual([d["datalogger_serial"] for d in lines], ["JPC281833B", "YUZ0828205"])

    def test_stdin_and_failure(self):
        result = self.grott(stdin=PING[:-2])
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stdout, "")
        self.assertEqual(len(result.stderr.splitlines()), 1)
        self.assertIn("incomplete", result.stderr)


class ExampleAndPrettyTests(SynchronousTestCase):
    def test_example_is_a_real_record(self):
        vector = BY_ID["grott-p6-0104-classic"]
        self.assertEqual(decode.EXAMPLE, vector["hex"])
        status, out, err = run(["--example"])
        self.assertEqual((status, err), (0, ""))
        [line] = out.splitlines()
        described = json.loads(line)
        self.assertEqual(described["record"]["inverter_serial"],
                         vector["expected"]["inverter_serial"])
        self.assertEqual(described["record"]["values"]["pvpowerout"], 195.7)

    def test_example_takes_no_hex(self):
        self.assertRaises(decode.usage.UsageError, decode.Options().parseOptions,
                          ["--example", PING])

    def test_pretty(self):
        status, out, _ = run(["--pretty", PING, PLAIN])
        self.assertEqual(status, 0)
        # Two indented documents, the same objects as the one-line output.
        decoder = json.JSONDecoder()
        first, end = decoder.raw_decode(out)
        second, _ = decoder.raw_decode(out[end:].lstrip())
        plain = [json.loads(line) for line in run([PING, PLAIN])[1].splitlines()]
        self.assertEqual([first, second], plain)
        self.assertIn('\n  "protocol": 6,\n', out)
