"""HCI, Dating Historical Color Images (Palermo, Hays, Efros, ECCV 2012): 5 decades, 1930s-1970s,
265 images each (1,325).

The authors' public archive HistoricalColor-ECCV2012-DecadeDatabase.tar (``files.archive``) holds
``HistoricalColor-ECCV2012/data/imgs/decade_database/<decade>/*.jpg``; it is downloaded once and
verified. Every image in a folder named after a decade is indexed, labelled 0 (1930s) .. 4
(1970s); the split protocol (per_class, 210/5/50 per decade, 10 random splits) is applied later.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from ordclip.data.fetch import (is_image, label_counts, member_path, obtain, source_files, unpack, write_labels,
                                write_record)
from ordclip.errors import DataError
from ordclip.io import atomic_path

log = logging.getLogger(__name__)

REQUEST = "https://graphics.cs.cmu.edu/projects/historicalColor/ (HistoricalColor-ECCV2012-DecadeDatabase.tar)"
DECADES = ["1930s", "1940s", "1950s", "1960s", "1970s"]


def fetch(dataset_cfg: dict, raw_dir: str) -> None:
    """Download (or take the placed) archive, verify it, extract the decade folders' images and
    write labels.csv (label = decade index)."""
    sources = {}
    archive, sources["archive"] = obtain(dataset_cfg, "archive", "HCI decade database archive", REQUEST)
    members = {m: DECADES.index(PurePosixPath(m).parent.name) for m in source_files(archive)
               if is_image(m) and PurePosixPath(m).parent.name in DECADES}
    rows = [{"path": f"images/{member_path(m)}", "label": label} for m, label in sorted(members.items())]
    counts = label_counts(rows)
    absent = [d for i, d in enumerate(DECADES) if str(i) not in counts]
    if absent:
        raise DataError(f"{archive}: no images in a folder named {absent[0]} "
                        f"(expected HistoricalColor-ECCV2012/data/imgs/decade_database/<decade>/*.jpg)")
    with atomic_path(raw_dir, is_dir=True) as raw:
        unpack(archive, raw / "images", keep=members.__contains__)
        write_labels(raw, rows, [])
        write_record(raw, sources, {"images": len(rows), "labels": counts})
    log.info(f"hci: {len(rows)} images, per decade {[counts[str(i)] for i in range(len(DECADES))]}")
