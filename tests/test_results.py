"""Every rank table the docs quote is recomputed from the committed raw results (examples/rank/results/:
truth.json, rank.json, rerank.json) by examples/rank/tables.py, and must equal its recomputation."""

import re
import sys

from conftest import ROOT, run

TABLES = ROOT / "examples" / "rank" / "tables.py"
PAGES = [ROOT / "examples" / "rank" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_quoted_table_equals_its_recomputation():
    quoted = [p for p in PAGES if "<!-- rank-table " in p.read_text()]
    assert ROOT / "examples" / "rank" / "README.md" in quoted
    run([sys.executable, str(TABLES), "--check", *map(str, quoted)])


def test_a_changed_figure_is_caught(tmp_path):
    page = tmp_path / "README.md"
    text = (ROOT / "examples" / "rank" / "README.md").read_text()
    block = re.search(r"<!-- rank-table \S+/methods -->\n(.*?)<!-- /rank-table -->", text, re.S)
    figure = re.search(r"\| (0\.\d{3}) \|", block.group(1)).group(1)  # a mean tau
    altered = text[:block.start(1)] + block.group(1).replace(figure, "0.999", 1) + text[block.end(1):]
    page.write_text(altered)
    proc = run([sys.executable, str(TABLES), "--check", str(page)], check=False)
    assert proc.returncode == 1 and "tables differ from their recomputation" in proc.stderr
    run([sys.executable, str(TABLES), "--write", str(page)])
    assert page.read_text() == text  # --write puts the recomputed figure back


def test_every_study_prints_its_tables():
    out = run([sys.executable, str(TABLES)]).stdout
    assert "Ceiling: the same" in out and "| method | tau, seeds 1-5 |" in out
