"""ordclip: a reproducibility pipeline for CLIP-based ordinal regression."""

__version__ = "0.1.0"
