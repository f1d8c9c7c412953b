"""The benchmarks run: bench/gpu.py with the tiny model on any device, bench/comparisons.py and
bench/lineage.py small, bench/startup.py's parser."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_runs_tiny(tmp_path):
    """bench/gpu.py --tiny: a row per stage (L2RCLIP has two) with every column filled."""
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--steps", "1",
                           "--methods", "ordinalclip", "l2rclip", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    header, *body = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [r[:2] for r in body] == [["ordinalclip", "train"], ["l2rclip", "prompts"], ["l2rclip", "image"],
                                     ["bare", "image tower + AdamW"]]
    for r in body[:-1]:
        values = dict(zip(header, r))
        assert float(values["img/s"]) > 0 and float(values["official img/s"]) > 0
        assert 0 < float(values["MFU"].rstrip("%")) and float(values["run min"]) > 0
        assert values["syncs/step"] == "0" and float(values["cpu ms"]) > 0
    assert float(dict(zip(header, body[-1]))["img/s"]) > 0


def test_comparisons_benchmark_runs_small():
    """bench/comparisons.py at a small size: the table's comparisons with their bootstrap, timed."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "comparisons.py"), "--images", "40", "--methods", "3",
                           "--folds", "2", "--seeds", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "3 methods × 4 runs × 40 test images, 2 metrics: 4 comparisons" in proc.stdout


@pytest.mark.slow
def test_lineage_benchmark_records_the_paper_suite(tmp_path):
    """bench/lineage.py with tiny stand-ins: the paper suite's DAG is recorded, recorded again and
    checked by `dvc status` (exit 0), and every row has its time."""
    out = tmp_path / "lineage.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "lineage.py"), "--mb", "0.01", "--out", str(out)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [
        "first (every stage new)", "again, nothing changed", "again, one cell's runs rewritten (5 folds)",
        "dvc status (whole record, afterwards)"], text
    assert all(float(r.rstrip(" |").split(" | ")[1]) > 0 for r in rows), text
    assert "dvc status exit 0." in text and "DVC stages" in text, text
