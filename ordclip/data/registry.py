"""The dataset registry: dataset kind -> how its raw files come to be. Plain data, no imports.

- "generate": written by `python -m ordclip generate` from the dataset's seed (rule `generate`).
- "fetch": downloaded (and sha256-verified) or placed by the user, then extracted and indexed into
  data/raw/<dataset>/labels.csv by `python -m ordclip fetch` (localrule `fetch`; the module's
  ``fetch(dataset_cfg, raw_dir)``).
- "csv": the user's own files, read where they are (datasets.<name>.csv and .image_root).
"""

DATASET_KINDS: dict[str, dict[str, str]] = {
    "synthetic": {"module": "ordclip.data.synthetic", "source": "generate"},
    "morph2": {"module": "ordclip.data.morph2", "source": "fetch"},
    "adience": {"module": "ordclip.data.adience", "source": "fetch"},
    "hci": {"module": "ordclip.data.hci", "source": "fetch"},
    "aesthetics": {"module": "ordclip.data.aesthetics", "source": "fetch"},
    "clap2015": {"module": "ordclip.data.clap2015", "source": "fetch"},
    "fgnet": {"module": "ordclip.data.fgnet", "source": "fetch"},
    "csv": {"module": "ordclip.data.prepare", "source": "csv"},
}
