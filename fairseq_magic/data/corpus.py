"""The embedded default corpus: English prose from installed packages' docstrings.

Nothing third-party is committed: the corpus is assembled at set-up time from
the docstrings of whatever Python packages are installed (torch, numpy, scipy,
fairseq, the standard library...), one paragraph per line, de-duplicated,
shuffled with a seed and split into train/valid/test.  ``--corpus PATH`` (plain
text, one paragraph or sentence per line) replaces it with the user's own.
``train_sentencepiece`` and ``encode_file`` turn it into the pieces that
``fairseq-preprocess`` binarises.
"""

import ast
import hashlib
import logging
import os
import random
import re
import sys
import sysconfig
import warnings
from typing import Callable, Dict, Iterable, Iterator, List, Sequence

from ..errors import MagicError

logger = logging.getLogger(__name__)

_WS = re.compile(r"\s+")
_CODEY = re.compile(r"(>>>|\.\.\. |::|=|\{|\}|\[|\]|<|>|\\|\||`|@|#|\$|_\w)")


def _docstrings(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def prose_paragraphs(doc: str) -> Iterator[str]:
    """Paragraphs of a docstring that read as English prose, not code or tables."""
    for block in re.split(r"\n\s*\n", doc):
        lines = block.strip().splitlines()
        if not lines or any(line.startswith((" ", "\t", "-", "*", ":", ">>>")) for line in lines[1:]):
            continue  # indented blocks are examples, parameter lists or tables
        text = _WS.sub(" ", block).strip()
        words = text.split(" ")
        if len(words) < 8 or len(text) > 2000:
            continue
        if _CODEY.search(text) or not text[0].isupper() or text[-1] not in ".!?":
            continue
        letters = sum(c.isalpha() or c == " " for c in text)
        if letters / len(text) < 0.9:
            continue
        yield text


def package_roots() -> List[str]:
    """Where installed Python code lives: the standard library and site-packages."""
    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots.update(p for p in sys.path if p.endswith("site-packages"))
    return sorted(r for r in roots if os.path.isdir(r))


def collect(roots: Sequence[str], max_bytes: int) -> List[str]:
    seen, paragraphs, size = set(), [], 0
    files = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "__pycache__"))
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    from tqdm import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in tqdm(files, desc="reading docstrings", unit="file", mininterval=2, disable=len(files) < 2000):
            for doc in _docstrings(path):
                for text in prose_paragraphs(doc):
                    key = hashlib.md5(text.lower().encode()).digest()
                    if key in seen:
                        continue
                    seen.add(key)
                    paragraphs.append(text)
                    size += len(text) + 1
            if size >= max_bytes:
                return paragraphs
    return paragraphs


TOPICS = {  # label -> top-level packages whose docstrings carry it
    "numeric": ("numpy", "scipy"),
    "stdlib": ("email", "http", "logging", "asyncio", "xml", "unittest", "tkinter", "multiprocessing", "urllib",
               "json", "sqlite3", "argparse", "concurrent", "importlib", "collections", "pathlib", "shutil", "tarfile"),
}


def topic_dataset(out_dir: str, per_label: int = 1500, dev_fraction: float = 0.2, seed: int = 1) -> Dict[str, int]:
    """A labelled sentence data set in GLUE's layout: is a docstring paragraph from a
    numerical library (numpy, scipy) or from Python's standard library?

    Writes ``train.input0``/``train.label`` and ``dev.input0``/``dev.label``
    (one paragraph, one label per line), balanced, shuffled with ``seed``.
    """
    import importlib.util

    by_label: Dict[str, List[str]] = {}
    seen = set()
    for label, packages in TOPICS.items():
        texts: List[str] = []
        for package in packages:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                continue
            for text in collect(list(spec.submodule_search_locations), max_bytes=per_label * 400):
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
        by_label[label] = texts
    n = min(per_label, *(len(v) for v in by_label.values()))
    if n < 20:
        raise MagicError(f"too few docstring paragraphs for the topic data set ({n} per label)")
    rng = random.Random(seed)
    rows = [(text, label) for label, texts in by_label.items() for text in rng.sample(texts, n)]
    rng.shuffle(rows)
    n_dev = int(len(rows) * dev_fraction)
    os.makedirs(out_dir, exist_ok=True)
    for split, part in (("dev", rows[:n_dev]), ("train", rows[n_dev:])):
        with open(os.path.join(out_dir, f"{split}.input0"), "w", encoding="utf-8") as f:
            f.write("".join(text + "\n" for text, _ in part))
        with open(os.path.join(out_dir, f"{split}.label"), "w", encoding="utf-8") as f:
            f.write("".join(label + "\n" for _, label in part))
    return {"train": len(rows) - n_dev, "dev": n_dev, "per_label": n}


def read_text_lines(path: str, what: str = "file", lone_cr_ends_line: bool = True) -> List[str]:
    """The lines of a UTF-8 text file, each without its LF or CRLF (and a lone CR ends a
    line too, as in Python's text files, unless ``lone_cr_ends_line`` is False); one
    error line naming the first byte that is not UTF-8 otherwise."""
    if not os.path.isfile(path):
        raise MagicError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise MagicError(f"{path} is not UTF-8 text: byte 0x{data[err.start]:02x} on line {line}; "
                         "convert it first (iconv -t UTF-8)") from None
    text = text.replace("\r\n", "\n")
    lines = (text.replace("\r", "\n") if lone_cr_ends_line else text).split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_lines(path: str) -> List[str]:
    """A corpus: its non-empty lines, whitespace runs made one space."""
    return [_WS.sub(" ", line).strip() for line in read_text_lines(path, "corpus file") if line.strip()]


def write_splits(paragraphs: Iterable[str], out_dir: str, seed: int = 1, held_out: float = 0.02) -> dict:
    """Shuffle and write train/valid/test.txt; returns the line count of each."""
    lines = list(paragraphs)
    if len(lines) < 10:
        raise MagicError(f"corpus too small: {len(lines)} lines (need at least 10)")
    random.Random(seed).shuffle(lines)
    n_held = max(1, int(len(lines) * held_out))
    splits = {"valid": lines[:n_held], "test": lines[n_held : 2 * n_held], "train": lines[2 * n_held :]}
    os.makedirs(out_dir, exist_ok=True)
    for name, part in splits.items():
        with open(os.path.join(out_dir, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    return {name: len(part) for name, part in splits.items()}


def build(out_dir: str, corpus: str = "", max_mb: float = 4.0, seed: int = 1) -> dict:
    if corpus:
        paragraphs = read_lines(corpus)
        source = corpus
    else:
        roots = package_roots()
        paragraphs = collect(roots, int(max_mb * 1e6))
        source = f"docstrings under {', '.join(roots)}"
    counts = write_splits(paragraphs, out_dir, seed=seed)
    logger.info(f"corpus from {source}: {counts} lines in {out_dir}")
    return counts


def synthetic_corpus(path: str, lines: int, seed: int, vocab: int = 60) -> None:
    """Sentences from a small random first-order Markov chain, for tests and benchmarks:
    learnable, generated on the spot, nobody's text."""
    rng = random.Random(seed)
    words = [f"tok{i}" for i in range(vocab)]
    successors = {w: rng.sample(words, 4) for w in words}
    with open(path, "w") as f:
        for _ in range(lines):
            sentence = [rng.choice(words)]
            for _ in range(rng.randint(6, 24)):
                sentence.append(rng.choice(successors[sentence[-1]]))
            f.write(" ".join(sentence) + "\n")



def train_sentencepiece(train: str, prefix: str, vocab_size: int, max_sentences: int = 200000):
    """A unigram sentencepiece model of ``train`` at ``prefix``.model; its processor."""
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(
            input=train, model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, input_sentence_size=max_sentences, shuffle_input_sentence=True,
            hard_vocab_limit=False,  # a small corpus gets the vocabulary it supports
            bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, num_threads=os.cpu_count() or 1, minloglevel=2,
        )
    except RuntimeError as err:
        raise MagicError(f"sentencepiece training failed: {str(err).strip().splitlines()[-1]}") from None
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def encode_file(encode, src: str, dst: str) -> None:
    """Each line of ``src`` as space-separated tokens, one line of ``dst`` each (what fairseq-preprocess
    reads); ``encode``: a ``text_encoder`` (or a sentencepiece processor)."""
    if not callable(encode):
        encode = pieces_of(encode)
    lines = read_text_lines(src)
    with open(dst, "w", encoding="utf-8") as fout:
        for line in lines:
            fout.write(encode(line.strip()) + "\n")


def pieces_of(sp) -> Callable[[str], str]:
    return lambda text: " ".join(sp.encode(text, out_type=str))


def text_encoder(spm_model: str = "", bpe_codes: str = "") -> Callable[[str], str]:
    """Text -> the space-separated tokens a model's dictionary holds: sentencepiece pieces
    (``spm_model``), or fastBPE subwords (``bpe_codes``, XLM's ``@@`` codes, as fairseq's
    ``--bpe fastbpe`` applies them)."""
    if bpe_codes:
        check_bpe_codes(bpe_codes)
        import fastBPE

        bpe = fastBPE.fastBPE(bpe_codes)  # it prints "Loading codes ..." (C++'s stdout, as the process ends)
        return lambda text: bpe.apply([text])[0]
    import sentencepiece as spm

    if not os.path.isfile(spm_model):
        raise MagicError(f"sentencepiece model not found: {spm_model}")
    return pieces_of(spm.SentencePieceProcessor(model_file=spm_model))


def check_bpe_codes(path: str) -> None:
    """A fastBPE codes file: lines 'a b count'. fastBPE itself aborts the process on anything else."""
    if not os.path.isfile(path):
        raise MagicError(f"BPE codes not found: {path}")
    for number, line in enumerate(read_text_lines(path, "BPE codes file"), 1):
        fields = line.split()
        if line.strip() and (len(fields) != 3 or not fields[2].isdigit()):
            raise MagicError(f"{path} line {number} is not a fastBPE code ('a b count'): {line.strip()[:60]!r}")