"""Two-stage knowledge distillation: masked_lm_kd in pre-training, sentence_prediction_kd
in fine-tuning (the latter with the fine-tuning pipeline in test_finetune.py)."""

import pytest
import torch

from conftest import load_state, magic, pretrain, train_log
from fairseq_magic.criterions.distillation import soft_cross_entropy

ARCH = "MHA2,FFN,CONV3,CONV5,FFN,MHA2"


@pytest.fixture(scope="module")
def teacher(supernet, tmp_path_factory):
    """A magic_child over data_bin's dictionary (dict.txt beside it)."""
    out = tmp_path_factory.mktemp("teacher") / "model.pt"
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(out))
    return str(out)


def test_soft_cross_entropy_is_zero_for_the_teachers_own_logits_and_grows_with_disagreement():
    logits = torch.randn(5, 11)
    assert float(soft_cross_entropy(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_cross_entropy(logits + torch.randn(5, 11), logits, 2.0)) > 0


def test_a_student_starting_as_its_teacher_has_no_distillation_loss(teacher, data_bin, tmp_path):
    proc = pretrain(data_bin, tmp_path, "--criterion", "masked_lm_kd", "--kd-teacher", teacher, "--kd-alpha", "0.7",
                    "--restore-file", teacher, "--reset-optimizer", "--dropout", "0", "--attention-dropout", "0")
    first = train_log(proc)[0]
    assert float(first["kd_loss"]) == pytest.approx(0.0, abs=1e-3)
    assert float(first["loss"]) == pytest.approx(0.3 * float(first["task_loss"]), abs=2e-3)


def test_distilled_pretraining_logs_both_terms_and_saves_only_the_student(teacher, data_bin, tmp_path):
    proc = pretrain(data_bin, tmp_path, "--criterion", "masked_lm_kd", "--kd-teacher", teacher,
                    "--kd-temperature", "2", "--child-arch", "MHA2,FFN", "--encoder-embed-dim", "16",
                    "--encoder-ffn-embed-dim", "32")
    records = train_log(proc)
    assert len(records) == 3 and all(float(r["kd_loss"]) > 0 and float(r["task_loss"]) > 0 for r in records)
    assert "valid" in proc.stdout + proc.stderr
    state = load_state(str(tmp_path / "checkpoint_last.pt"))
    assert state.get("criterion") is None  # the criterion saves nothing: the teacher is not the student's
    assert all(v.shape[-1] == 16 for k, v in state["model"].items() if k.endswith("embed_tokens.weight"))
    assert not any(k.startswith("teacher") for k in state["model"])
