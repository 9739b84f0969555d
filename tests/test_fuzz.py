"""The front door, fuzzed: whatever a user feeds the plugin as an architecture,
a candidate list, a GLUE TSV or a corpus, the outcome is a result or one
MagicError line (what the command prints after ``fairseq-magic: error:``),
never another exception and so never a traceback.
"""

import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fairseq_magic.data import corpus, glue
from fairseq_magic.errors import MagicError
from fairseq_magic.models.supernet import resolve_child
from fairseq_magic.space import SearchSpace, load_child

SPACE = SearchSpace.build(num_layers=6, candidate_ops="MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# pieces a user might type, right or wrong
OPERATORS = st.sampled_from(["MHA2", "MHA4", "FFN", "FFN64", "FFN0", "CONV3", "CONV4", "CONV5", "mha2", "MHA",
                             "CONV", "FFN-1", " FFN ", "", "|", "MHA2|FFN", "BOGUS", "CONV99999999999999999999"])
VALID = st.sampled_from([op.name for op in SPACE.candidates])
ARCH_STRINGS = st.one_of(
    st.text(max_size=80), st.lists(OPERATORS, max_size=9).map(",".join),
    st.lists(VALID, min_size=6, max_size=6).map(",".join),  # children of the space
    st.lists(st.one_of(VALID, VALID, OPERATORS), min_size=5, max_size=7).map(",".join),  # nearly
)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
SPACE_DICTS = st.fixed_dictionaries({}, optional={
    "num_layers": st.one_of(st.integers(-3, 30), JSON_VALUES),
    "candidates": st.one_of(st.lists(OPERATORS, max_size=5), JSON_VALUES),
    "hidden_dim": st.one_of(st.integers(-4, 4096), JSON_VALUES),
    "ffn_dim": st.one_of(st.integers(-4, 4096), JSON_VALUES),
    "qkv_dim": st.integers(-4, 256), "embed_dim": st.integers(-4, 256), "head_dim": st.integers(-4, 64),
    "entangled": JSON_VALUES,
})
ARCH_FILES = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries({"arch": ARCH_STRINGS, "space": st.one_of(  # the space's own files, one entry at a time wrong
        st.just(SPACE.to_dict()),
        st.builds(lambda key, value: {**SPACE.to_dict(), key: value}, st.sampled_from(sorted(SPACE.to_dict())),
                  JSON_VALUES))}).map(lambda v: json.dumps(v).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"arch": st.one_of(ARCH_STRINGS, JSON_VALUES), "space": st.one_of(SPACE_DICTS, JSON_VALUES)})
    .map(lambda v: json.dumps(v).encode()),
)
LINES = st.one_of(st.text(max_size=40), st.just(""), st.just("x" * 100_000), st.text(alphabet="\t\r\n\x00 ", max_size=6))
TEXT_FILES = st.one_of(
    st.binary(max_size=400),
    st.lists(LINES, max_size=30).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.lists(LINES, max_size=30).map(lambda lines: "\n".join(lines).encode("utf-16")),
)


def outcome(fn, *args, **kwargs):
    """``fn``'s result, or the one-line message of the MagicError it raised (any other exception fails the test)."""
    try:
        return fn(*args, **kwargs)
    except MagicError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return message


def write(data: bytes, name: str, folder: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


@FUZZ
@given(ARCH_STRINGS)
def test_architecture_strings(text):
    child = outcome(resolve_child, text, SPACE)
    assert isinstance(child, str) or (len(child) == SPACE.num_layers and SPACE.format(child) == SPACE.format(
        SPACE.parse(SPACE.format(child))))


@FUZZ
@given(ARCH_FILES)
def test_architecture_files(data):
    with tempfile.TemporaryDirectory() as folder:
        path = write(data, "arch.json", folder)
        result, alone = outcome(load_child, path, SPACE), outcome(load_child, path)  # checked against a space, or not
    assert isinstance(result, str) or result[0] == SPACE
    assert isinstance(alone, str) or alone[0].format(alone[1])


@FUZZ
@given(st.one_of(st.text(max_size=60), st.lists(OPERATORS, max_size=6).map(",".join),
                st.lists(VALID, min_size=1, max_size=4).map(",".join)), st.integers(-2, 40),
       st.integers(-2, 512), st.integers(-2, 2048), st.booleans())
def test_candidate_ops(text, num_layers, hidden, ffn, entangled):
    space = outcome(SearchSpace.build, num_layers=num_layers, candidate_ops=text, hidden_dim=hidden, ffn_dim=ffn,
                    entangled=entangled)
    if not isinstance(space, str):
        assert space.num_layers == num_layers and space.candidates and space.describe()
        assert SearchSpace.from_dict(space.to_dict()) == space


@FUZZ
@given(TEXT_FILES)
def test_corpus_files(data):
    with tempfile.TemporaryDirectory() as folder:
        counts = outcome(corpus.build, os.path.join(folder, "out"), corpus=write(data, "corpus.txt", folder))
    assert isinstance(counts, str) or sum(counts.values()) >= 10


def tsv_files(columns: int):
    """RTE-like TSVs: a header, then rows of index, two sentences and a label, some of them wrong
    (fields missing or added, odd labels, control characters, a huge sentence)."""
    sentence = st.one_of(st.text(alphabet=st.characters(blacklist_characters="\t\n\r"), max_size=20),
                         st.sampled_from(["", "x" * 100_000, "\x00\x0b\x1c", "\u2028 \ufeff"]))
    label = st.one_of(st.sampled_from(["entailment", "not_entailment"]), st.text(max_size=5))
    good = st.tuples(st.integers(0, 99).map(str), sentence, sentence, label).map(list)
    row = st.one_of(good, good, good, st.lists(sentence, min_size=max(columns - 2, 0), max_size=columns + 2))
    return st.lists(row.map("\t".join), max_size=12).map(
        lambda rows: ("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n").encode("utf-8", "surrogatepass"))


@pytest.fixture(scope="module")
def spm_files(spm_data):
    return spm_data["spm"], os.path.join(spm_data["bin"], "dict.txt")


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.one_of(tsv_files(4), tsv_files(4), TEXT_FILES), st.one_of(tsv_files(4), tsv_files(4), TEXT_FILES))
def test_glue_tsvs(spm_files, train, dev):
    spm_model, dictionary = spm_files
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "glue", "RTE"))
        write(train, os.path.join("glue", "RTE", "train.tsv"), folder)
        write(dev, os.path.join("glue", "RTE", "dev.tsv"), folder)
        result = outcome(glue.prepare, os.path.join(folder, "glue"), os.path.join(folder, "out"), spm_model,
                         dictionary, ["RTE"])
        if not isinstance(result, str):
            event("prepared")
            assert os.path.isfile(os.path.join(folder, "out", "RTE-bin", "input0", "train.bin"))
