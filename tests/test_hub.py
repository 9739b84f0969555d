"""Loading a trained super-net through fairseq's hub interface (torch 2.13 checkpoints)."""

import sys
from pathlib import Path

import pytest
import torch
from fairseq.models.roberta import RobertaHubInterface

from conftest import PLUGIN, fairseq_train, load_state, run
from fairseq_magic.models.child import MagicChildModel
from fairseq_magic.models.supernet import MagicSupernetModel


def test_from_pretrained_loads_a_supernet_checkpoint(spm_data, tmp_path):
    fairseq_train(spm_data["bin"], str(tmp_path), "--max-update", "3", "--align-lambda", "0.5",
                  "--align-every", "3", "--align-warmup-epochs", "0", "--sampler", "gradual")
    hub = MagicSupernetModel.from_pretrained(
        str(tmp_path), checkpoint_file="checkpoint_last.pt", data_name_or_path=spm_data["bin"],
        bpe="sentencepiece", sentencepiece_model=spm_data["spm"], user_dir=PLUGIN,
    )
    assert isinstance(hub, RobertaHubInterface)
    hub.eval()
    assert hub.model.search_state.update == 2 and hub.model.search_state.anchor.arch
    tokens = hub.encode("tok1 tok5 tok7 tok3")
    assert hub.decode(tokens) == "tok1 tok5 tok7 tok3"
    hub.model.set_child("MHA2,FFN,CONV3,CONV5,FFN,MHA2")
    features = hub.extract_features(tokens)
    assert features.shape == (1, len(tokens), 32)
    all_layers = hub.extract_features(tokens, return_all_hiddens=True)
    assert len(all_layers) == 7 and torch.equal(all_layers[-1], features)


def test_a_fine_tuned_folder_classifies_raw_text_with_nothing_passed(finetuned):
    """The labels keep their index although '1' is the majority (fairseq-preprocess would put it
    first), and the fine-tuning folder loads alone: its checkpoint, its data's dictionaries and
    the bpe model beside the export it restored are found."""
    assert finetuned["counts"]["1"] > finetuned["counts"]["0"]
    labels = (Path(finetuned["data"]) / "label" / "dict.txt").read_text().split()[::2]
    assert labels == ["0", "1"]
    hub = MagicChildModel.from_pretrained(finetuned["ft"])
    hub.eval()
    assert hub.labels == ["0", "1"]
    sentences = ["tok3 tok40 tok41 tok50", "tok44 tok45 tok46 tok47 tok48", "tok2 tok9"]
    predictions = hub.classify(sentences)
    for sentence, prediction in zip(sentences, predictions):
        index = int(hub.predict("sentence_classification_head", hub.encode(sentence)).argmax())
        assert prediction.label == hub.labels[index]  # index i is label i
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.probability == max(prediction.probabilities.values())
    alone = hub.classify(sentences[0])  # one sentence: one prediction (unpadded: the same up to rounding)
    assert alone.label == predictions[0].label and alone.probability == pytest.approx(predictions[0].probability)
    pair = hub.classify(("tok3 tok4", "tok5 tok6"))  # a sentence pair, encoded as fine-tuning does
    assert pair.label in hub.labels


def test_fairseq_validate_takes_task_criterion_and_data_from_the_checkpoint(finetuned):
    """`fairseq-validate --path` alone on a fine-tuned child (fairseq: KeyError: None), on an
    export and on a super-net checkpoint."""
    best = str(Path(finetuned["ft"]) / "checkpoint_best.pt")
    for path in (best, str(Path(finetuned["child"]) / "model.pt")):
        proc = run([sys.executable, "-m", "fairseq_cli.validate", "--path", path, "--user-dir", PLUGIN, "--cpu"])
        assert "valid on 'valid' subset" in proc.stdout + proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        if path == best:  # the accuracy the fine-tuning run recorded for its best checkpoint
            accuracy = float((proc.stdout + proc.stderr).split("| accuracy ")[1].split()[0])
            assert accuracy == pytest.approx(load_state(best)["extra_state"]["val_loss"], abs=0.06)
