"""ordclip: a reproducibility pipeline for CLIP-based ordinal regression."""

from ordclip.log import setup as _setup_logging

__version__ = "0.1.0"

_setup_logging()
