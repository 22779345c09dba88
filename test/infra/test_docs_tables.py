"""The generated tables of docs/results.md and docs/models.md match the committed raw results
(``benchmarks/docs_tables.py --check``, run as a user runs it), and the check notices a
retyped cell or a lost marker."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "docs_tables.py"


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_docs_match_the_raw_results():
    proc = _check()
    assert proc.returncode == 0, proc.stderr


def test_check_catches_a_retyped_cell_and_a_lost_marker(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("*.png"))
    page = docs / "results.md"
    text = page.read_text(encoding="utf-8")
    block = text.split("<!-- generated:study-full begin -->", 1)[1].split("|---", 1)[1]
    row = block.split("\n")[1]
    cells = row.split(" | ")
    cells[2] = "99.99 ± 0.01"  # a hand-edited mIoU
    page.write_text(text.replace(row, " | ".join(cells)), encoding="utf-8")
    proc = _check("--docs", str(docs))
    assert proc.returncode == 1 and "results.md differs" in proc.stderr
    # regenerating restores the committed page exactly
    subprocess.run([sys.executable, str(SCRIPT), "--docs", str(docs)], check=True,
                   capture_output=True, timeout=120)
    assert page.read_text(encoding="utf-8") == (REPO / "docs" / "results.md").read_text(
        encoding="utf-8")
    page.write_text(text.replace("<!-- generated:study-verdicts end -->", ""), encoding="utf-8")
    proc = _check("--docs", str(docs))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "study-verdicts" in proc.stderr
