"""The dataset registry: dataset kind -> how its raw files come to be. Plain data, no imports.

- "generate": written by `python -m ordclip generate` from the dataset's seed (rule `generate`).
"""

DATASET_KINDS: dict[str, dict[str, str]] = {
    "synthetic": {"module": "ordclip.data.synthetic", "source": "generate"},
}
