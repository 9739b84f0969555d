"""The readers of result files (truth.json, children.json, a job's result) take any bytes: what they
return is well-formed, and anything else is one MagicError, never another exception (hypothesis)."""

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import assert_one_error_line, magic
from fairseq_magic.analysis.ground_truth import METRICS, read_truth
from fairseq_magic.analysis.rank_correlation import read_children
from fairseq_magic.errors import MagicError
from fairseq_magic.jobs import write_json

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.sampled_from(
                          ["valid_loss", "valid_loss_by_seed", "finetune_accuracy", "1"]), inner, max_size=3),
                      max_leaves=12)
# whole files: JSON of anything (NaN and infinity as Python writes them), or arbitrary bytes (truncated, binary)
FILES = VALUES.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=40)


def read(name: str, content: bytes, reader):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / name).write_bytes(content)
        return reader(folder)


@settings(max_examples=300, deadline=None)
@given(content=FILES | st.dictionaries(st.text(max_size=4), VALUES, max_size=3).map(lambda v: json.dumps(v).encode()))
def test_truth_json_is_read_whole_or_refused_in_one_line(content):
    try:
        truth = read("truth.json", content, read_truth)
    except MagicError as err:
        assert "\n" not in str(err)
        return
    for record in truth.values():
        for metric in METRICS:
            if metric in record:
                assert math.isfinite(record[metric]) and type(record[metric]) is float
                assert all(math.isfinite(v) for v in record[f"{metric}_by_seed"].values())


@settings(max_examples=200, deadline=None)
@given(content=FILES | st.lists(st.text(max_size=8), max_size=3).map(lambda v: json.dumps(v).encode()))
def test_children_json_is_read_or_refused_in_one_line(content):
    try:
        read("children.json", content, read_children)
    except MagicError as err:  # here no architecture file exists, so even good names end in an error line
        assert "\n" not in str(err)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_result_json_cannot_hold_is_refused_not_written(tmp_path, value):
    path = tmp_path / "truth.json"
    path.write_text('{"child000": {"valid_loss": 5.0}}')
    with pytest.raises(MagicError, match="Out of range float values are not JSON compliant"):
        write_json(str(path), {"child000": {"valid_loss": value}})
    assert json.loads(path.read_text()) == {"child000": {"valid_loss": 5.0}}  # the previous file stays


def test_a_file_too_large_to_write_leaves_the_previous_one(tmp_path):
    path = tmp_path / "search.json"
    path.write_text('{"old": true}')
    script = ("import resource, sys\nfrom fairseq_magic.space import write_whole\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
              f"write_whole({str(path)!r}, 'x' * 1000)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().endswith("search.json: File too large")
    assert path.read_text() == '{"old": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["search.json"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(supernet):
    proc = magic("search", "--checkpoint", supernet, "--out", "/proc/fairseq-magic/search", "--algorithm", "random",
                 "--children", "2", check=False)
    assert_one_error_line(proc, "--out /proc/fairseq-magic/search: cannot write there")
    assert "children scored" not in proc.stdout + proc.stderr
