"""`export --format huggingface`: the same features, logits and token ids in transformers as in fairseq."""

from pathlib import Path

import pytest
import torch

from conftest import PLAIN_CHILD, assert_one_error_line, magic
from fairseq_magic.models.child import MagicChildModel

transformers = pytest.importorskip("transformers")  # an optional extra; scripts/install.sh installs it

TEXTS = ["tok3 tok17 tok5 tok42 tok8", "  tok1   tok2  ", "tok9 tok33 tok3 tok17 tok5 tok42 tok8 tok11 tok59"]


def fairseq_and_hf_ids(hub, tokenizer, text_a, text_b=None):
    ours = hub.encode(text_a) if text_b is None else hub.encode(text_a, text_b)
    theirs = tokenizer(text_a) if text_b is None else tokenizer(text_a, text_b)
    return ours, torch.tensor(theirs["input_ids"])


def test_a_masked_lm_child_computes_the_same_features_in_transformers(plain_supernet, spm_data, tmp_path):
    magic("export", "--checkpoint", plain_supernet, "--arch", PLAIN_CHILD, "--out", str(tmp_path / "fairseq" / "model.pt"),
          "--sentencepiece-model", spm_data["spm"])
    magic("export", "--checkpoint", plain_supernet, "--arch", PLAIN_CHILD, "--out", str(tmp_path / "hf"),
          "--sentencepiece-model", spm_data["spm"], "--format", "huggingface")
    hub = MagicChildModel.from_pretrained(str(tmp_path / "fairseq"))
    hub.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf"))
    model.eval()
    sentences = [s.strip() for s in open(f"{spm_data['text']}/valid.txt", encoding="utf-8") if s.strip()][:30]
    for text in TEXTS + sentences:
        ours, theirs = fairseq_and_hf_ids(hub, tokenizer, text)
        assert torch.equal(ours, theirs), text
    ours, theirs = fairseq_and_hf_ids(hub, tokenizer, TEXTS[0], TEXTS[1])  # <s> a </s> </s> b </s>
    assert torch.equal(ours, theirs)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        for row, text in enumerate(TEXTS):
            tokens = hub.encode(text).unsqueeze(0)
            length = tokens.size(1)
            features, extra = hub.model(tokens, features_only=True)
            torch.testing.assert_close(out.hidden_states[-1][row, :length], features[0], atol=1e-4, rtol=0)
            logits, _ = hub.model(tokens)
            torch.testing.assert_close(out.logits[row, :length], logits[0], atol=1e-4, rtol=0)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "AutoModelForMaskedLM" in card and PLAIN_CHILD in card


def test_a_fine_tuned_classifier_gives_the_same_logits_and_labels(finetuned, tmp_path):
    magic("export", "--checkpoint", str(Path(finetuned["ft"]) / "checkpoint_best.pt"), "--out", str(tmp_path / "hf"),
          "--format", "huggingface")  # the sentencepiece model: beside the export fine-tuning restored
    hub = MagicChildModel.from_pretrained(finetuned["ft"])
    hub.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf"))
    model.eval()
    assert [model.config.id2label[i] for i in range(2)] == hub.labels == ["0", "1"]
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = model(**batch).logits
        ours = torch.cat([hub.predict("sentence_classification_head", hub.encode(t), return_logits=True) for t in TEXTS])
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    labels = [model.config.id2label[int(i)] for i in theirs.argmax(-1)]
    assert labels == [p.label for p in hub.classify(TEXTS)]
    card = (tmp_path / "hf" / "README.md").read_text()  # the fine-tuned child still names its super-net
    assert "- super-net: `" in card and "then trained as a child (sentence_prediction, 12 updates" in card
    assert "labels in index order: 0, 1" in card


def test_other_children_and_missing_tokenizer_are_one_line(plain_supernet, tmp_path):
    proc = magic("export", "--checkpoint", plain_supernet, "--arch", "MHA4,FFN,CONV3,FFN,MHA4,FFN", "--out",
                 str(tmp_path / "x"), "--format", "huggingface", check=False)
    assert_one_error_line(proc, "is not a plain Transformer")
    proc = magic("export", "--checkpoint", plain_supernet, "--arch", PLAIN_CHILD, "--out", str(tmp_path / "y"),
                 "--format", "huggingface", check=False)
    assert_one_error_line(proc, "--format huggingface needs the sentencepiece model")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
