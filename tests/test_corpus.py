"""The embedded default corpus and the small commands around it."""

import pytest

from conftest import magic
from fairseq_magic.data.corpus import package_roots, prose_paragraphs, write_splits
from fairseq_magic.errors import MagicError


def test_prose_filter_keeps_sentences_and_drops_code():
    doc = """Return the indices of the elements that are non-zero, in row-major order.

    >>> np.nonzero([1, 0, 2])
    (array([0, 2]),)

    Parameters
    ----------
    a : array_like
        Input data.

    short line.

    x = compute(y) if z else w, which is code and not prose at all here."""
    import inspect

    paragraphs = list(prose_paragraphs(inspect.cleandoc(doc)))
    assert paragraphs == ["Return the indices of the elements that are non-zero, in row-major order."]


def test_write_splits_is_seeded_and_disjoint(tmp_path):
    lines = [f"Sentence number {i} is a plain sentence." for i in range(200)]
    counts = write_splits(lines, str(tmp_path / "a"), seed=3)
    write_splits(lines, str(tmp_path / "b"), seed=3)
    assert counts == {"valid": 4, "test": 4, "train": 192}
    parts = {name: (tmp_path / "a" / f"{name}.txt").read_text().splitlines() for name in counts}
    assert sum(map(len, parts.values())) == 200 and len(set().union(*map(set, parts.values()))) == 200
    assert (tmp_path / "a" / "train.txt").read_text() == (tmp_path / "b" / "train.txt").read_text()
    with pytest.raises(MagicError, match="corpus too small"):
        write_splits(lines[:5], str(tmp_path / "c"))


def test_the_default_corpus_comes_from_installed_packages():
    roots = package_roots()
    assert any(r.endswith("site-packages") for r in roots)


def test_corpus_command_with_a_missing_file_fails_clearly(tmp_path):
    proc = magic("corpus", "--out", str(tmp_path), "--corpus", str(tmp_path / "missing.txt"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"fairseq-magic: error: corpus file not found: {tmp_path / 'missing.txt'}"


def test_space_command_prints_table6():
    out = magic("space", "--arch", "magic_supernet_analysis").stdout
    assert "12 layers x {MHA6, MHA8, FFN, FFN832, CONV3, CONV5}, hidden 768" in out
    assert "FFN832         1,281,088" in out
    proc = magic("space", "--arch", "roberta_base", check=False)
    assert proc.returncode == 1 and "unknown super-net architecture 'roberta_base'" in proc.stderr
