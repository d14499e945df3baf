"""
The `grott` console script's own options: --version names grott, --help
says where the service is, and each command's usage line reads right.
"""

import io
import sys
from importlib import metadata

from twisted.trial.unittest import SynchronousTestCase

from grott import cli


class CliTests(SynchronousTestCase):
    def run_cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as raised:
            cli.main(list(argv))
        return raised.exception.code, out.getvalue(), err.getvalue()

    def test_version(self):
        expected = f"grott {metadata.version('grott')} (Twisted "
        for argv in (["--version"], ["check", "--version"], ["decode", "--version"]):
            code, out, _ = self.run_cli(*argv)
            self.assertEqual(code, 0)
            self.assertTrue(out.startswith(expected), (argv, out))

    def test_helpSaysWhereTheServiceIs(self):
        code, out, _ = self.run_cli("--help")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("Usage: grott COMMAND [options]"), lines[0])
        self.assertIn("  twistd -n grott --config config.yaml", out)
        self.assertIn("twistd grott --help", out)
        self.assertIn('twistd -ny $(python -m grott.tac)', out)

    def test_commandUsageLine(self):
        for command, synopsis in [("check", "[--config PATH]"), ("fake-cloud", "[options]"),
                                  ("simulate", "[options]")]:
            code, out, _ = self.run_cli(command, "--help")
            self.assertEqual(code, 0)
            self.assertEqual(out.splitlines()[0], f"Usage: grott {command} {synopsis}")
            # The service's lines belong to the top level only.
            self.assertNotIn("twistd -n grott", out)

    def test_noCommand(self):
        code, _, err = self.run_cli()
        self.assertEqual(code, 2)
        self.assertEqual(err.splitlines()[:2], [
            "grott: which command? (decode, check, simulate, fake-cloud)",
            "Usage: grott COMMAND [options]   (grott COMMAND --help for a command's options)"])
