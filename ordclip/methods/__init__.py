"""The method registry: method kind -> implementing module and what it trains on.

Plain data (module paths as strings), so reading it imports nothing; `load(kind)` imports the
module. Adding a method = one module + one line here + its parameters in params.yaml.

- "features": fitted on cached frozen image features (no gradient training, no GPU).
- "images": trained end to end by the generic loop in ordclip.train.
"""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS: dict[str, dict[str, str]] = {
    "zeroshot": {"module": "ordclip.methods.zeroshot", "trains_on": "features"},
    "linear_probe": {"module": "ordclip.methods.linear_probe", "trains_on": "features"},
    "baseline": {"module": "ordclip.methods.baseline", "trains_on": "images"},
    "coop": {"module": "ordclip.methods.coop", "trains_on": "images"},
    "ordinalclip": {"module": "ordclip.methods.ordinalclip", "trains_on": "images"},
    "l2rclip": {"module": "ordclip.methods.l2rclip", "trains_on": "images"},
    "numclip": {"module": "ordclip.methods.numclip", "trains_on": "images"},
}


def load(kind: str) -> ModuleType:
    """The module implementing method ``kind``."""
    return importlib.import_module(METHODS[kind]["module"])
