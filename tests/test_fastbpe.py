"""fastBPE codes (XLM-style subwords) instead of sentencepiece: encode, glue-prep, export and the hub."""

import collections
import sys

import fastBPE
import torch
from fairseq.data import Dictionary, data_utils

from conftest import PLAIN_CHILD, assert_one_error_line, fairseq_train, magic, own_labelled_data, run
from fairseq_magic.models.child import MagicChildModel


def learn_codes(lines, merges: int):
    """BPE codes as fastBPE reads them ('a b count', '</w>' ending a word): the most frequent
    adjacent pair merged, ``merges`` times (Sennrich et al.), learned here on the test's data."""
    vocab = collections.Counter()
    for word, count in collections.Counter(w for line in lines for w in line.split()).items():
        vocab[tuple(word[:-1]) + (word[-1] + "</w>",)] += count
    codes = []
    for _ in range(merges):
        pairs = collections.Counter()
        for symbols, count in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        (a, b), count = max(pairs.items(), key=lambda item: (item[1], item[0]))
        codes.append(f"{a} {b} {count}")
        merged = collections.Counter()
        for symbols, count in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i:i + 2] == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        vocab = merged
    return codes


def test_fastbpe_codes_go_through_glue_prep_export_and_the_hub(spm_data, tmp_path):
    text = [line.strip() for line in open(f"{spm_data['text']}/train.txt", encoding="utf-8") if line.strip()]
    codes = tmp_path / "codes"
    codes.write_text("\n".join(learn_codes(text[:300], 80)) + "\n")
    for split in ("train", "valid"):
        (tmp_path / f"{split}.txt").write_text(open(f"{spm_data['text']}/{split}.txt", encoding="utf-8").read())
    magic("encode", "--bpe-codes", str(codes), str(tmp_path / "train.txt"), str(tmp_path / "valid.txt"))
    run([sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref", str(tmp_path / "train.txt.spm"),
         "--validpref", str(tmp_path / "valid.txt.spm"), "--destdir", str(tmp_path / "bin"), "--workers", "1"])
    fairseq_train(str(tmp_path / "bin"), str(tmp_path / "net"), "--max-update", "2", "--candidate-ops", "MHA4,FFN",
                  "--embed-factor-dim", "0", "--required-batch-size-multiple", "1")  # 7 validation blocks
    child = tmp_path / "child"
    magic("export", "--checkpoint", str(tmp_path / "net" / "checkpoint_last.pt"), "--arch", PLAIN_CHILD,
          "--out", str(child / "model.pt"), "--bpe-codes", str(codes))
    assert (child / "bpecodes").read_text() == codes.read_text()

    bpe = fastBPE.fastBPE(str(codes))
    dictionary = Dictionary.load(str(child / "dict.txt"))
    sentence = text[5]
    expected = dictionary.encode_line(bpe.apply([sentence])[0], append_eos=True, add_if_not_exist=False)
    hub = MagicChildModel.from_pretrained(str(child))  # finds bpecodes: --bpe fastbpe
    assert torch.equal(hub.encode(sentence)[1:], expected.long())  # after <s>
    assert hub.decode(hub.encode(sentence)) == sentence

    own_labelled_data(tmp_path / "raw" / "reviews", text)
    magic("glue-prep", "--glue-dir", str(tmp_path / "raw"), "--tasks", "reviews:SST-2", "--model", str(child),
          "--out", str(tmp_path / "glue"))
    rows = (tmp_path / "raw" / "reviews" / "train.tsv").read_text().splitlines()[1:]
    prepared = data_utils.load_indexed_dataset(str(tmp_path / "glue" / "reviews-bin" / "input0" / "train"), dictionary)
    first = rows[0].split("\t")[0]
    assert torch.equal(prepared[0], dictionary.encode_line(bpe.apply([first])[0], add_if_not_exist=False).long())

    proc = magic("export", "--checkpoint", str(child / "model.pt"), "--out", str(tmp_path / "hf"),
                 "--format", "huggingface", check=False)  # the bpe codes beside the child are found; no fast tokenizer
    assert_one_error_line(proc, "--format huggingface needs the sentencepiece model")
    proc = magic("encode", "--bpe-codes", str(child / "README.md"), str(tmp_path / "train.txt"), check=False)
    assert_one_error_line(proc, "is not a fastBPE code ('a b count')")
