"""
The public test vectors (real captured packets), copied from the project's
protocol reference into tests/data so the suite never reads ../shared.
"""

import json
import os

_PATH = os.path.join(os.path.dirname(__file__), "data", "vectors.json")

with open(_PATH, encoding="utf-8") as _f:
    VECTORS = json.load(_f)["vectors"]

BY_ID = {v["id"]: v for v in VECTORS}


def raw(vector_id):
    """The wire bytes of one vector."""
    return bytes.fromhex(BY_ID[vector_id]["hex"])
