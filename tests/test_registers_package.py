"""
Rules for the registers package itself: stdlib and grott.codec only, the
generated docs/registers.md is current, the tables are consistent.
"""

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import grott.registers
from grott.registers import FAMILIES, doc
from grott.registers.maps import ALIASES, DTC_FAMILIES

_ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
_PACKAGE = os.path.dirname(grott.registers.__file__)
#: The standard library modules the package may use (no Twisted, no YAML).
_STDLIB = {"dataclasses", "datetime", "math", "re", "struct", "sys", "types", "typing"}


class PackageRuleTests(SynchronousTestCase):
    def test_imports(self):
        """Only the standard library, grott.codec and grott.registers."""
        for name in sorted(os.listdir(_PACKAGE)):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(_PACKAGE, name), encoding="utf-8") as f:
                tree = ast.parse(f.read(), name)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top == "grott":
                        self.assertTrue(module.startswith(("grott.codec", "grott.registers")),
                                        f"{name} imports {module}")
                    else:
                        self.assertIn(top, _STDLIB, f"{name} imports {module}")

    def test_docs_are_current(self):
        with open(os.path.join(_ROOT, "docs", "registers.md"), encoding="utf-8") as f:
            self.assertEqual(f.read(), doc.render(),
                             "run: python -m grott.registers.doc > docs/registers.md")

    def test_tables(self):
        """
        Within a table, a name appears twice only as an alternate at another
        place with the same encoding; every field ends below 65536; aliases
        and DTCs point at real families.
        """
        for family in FAMILIES.values():
            for table in ("input", "holding"):
                seen = {}
                for field in family.fields(table):
                    self.assertLessEqual(field.register + field.width, 0x10000)
                    self.assertIn(field.bits, (16, 32))
                    self.assertGreater(field.scale, 0)
                    first = seen.setdefault(field.name, field)
                    if first is not field:
                        self.assertNotEqual(first.register, field.register, field)
                        self.assertEqual(first._replace(register=0), field._replace(register=0),
                                         field)
        for target in list(ALIASES.values()) + list(DTC_FAMILIES.values()):
            self.assertIn(target, FAMILIES)

    def test_grott_names_in_every_pv_family(self):
        """The names dashboards use most exist in every PV family."""
        for name in ("classic", "tlx", "tl3x", "storage"):
            names = {field.name for field in FAMILIES[name].input}
            for common in ("pvstatus", "pvpowerin", "pv1voltage", "pvpowerout",
                           "pvenergytoday", "pvenergytotal", "pvgridvoltage", "pvtemperature"):
                self.assertIn(common, names, f"{name} lacks {common}")
        spf = {field.name for field in FAMILIES["spf"].input}
        for common in ("pvstatus", "pvpowerout", "pvenergytoday", "pvenergytotal",
                       "pvgridvoltage", "batterySoc"):
            self.assertIn(common, spf)
